package bootstrap

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/sshx"
	"github.com/zeitwork/zeitwork/internal/sshx/sshxtest"
)

// TestDryRunProbesMachinesOverSSH plans the example cluster against a real
// OpenSSH server: each node is a directory of this machine (the Host's
// root), reached over SSH with its key pinned.
func TestDryRunProbesMachinesOverSSH(t *testing.T) {
	srv := sshxtest.Start(t)
	c, env := testCluster(t)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	roots := map[string]string{}
	dial := func(ctx context.Context, n Node) (Host, error) {
		cl, err := sshx.Dial(ctx, srv.Addr, sshx.Config{User: srv.User, Signer: srv.Signer, KnownHosts: knownHosts, Timeout: time.Minute})
		if err != nil {
			return nil, err
		}
		if roots[n.Name] == "" {
			roots[n.Name] = t.TempDir()
			// The kata workers' KVM (a file will do: only its existence
			// is checked).
			os.MkdirAll(filepath.Join(roots[n.Name], "dev"), 0o755)
			os.WriteFile(filepath.Join(roots[n.Name], KVMDevice), nil, 0o600)
		}
		return NewSSHHost(cl, roots[n.Name]), nil
	}
	plan := func() string {
		var out bytes.Buffer
		b := &Bootstrap{Cluster: c, Env: env, Out: &out, DryRun: true, Dial: dial}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := b.Run(ctx); err != nil {
			t.Fatalf("dry run: %v\n%s", err, out.String())
		}
		return out.String()
	}
	out := plan()
	for _, want := range []string{"[ok] op-1: ssh root@203.0.113.11", "[todo] op-1: zeitwork binary /usr/local/bin/zeitwork: to write", "[todo] build-1: buildkitd: /usr/local/bin/buildkitd is missing"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(mustRead(t, knownHosts), "\n"); n != 1 {
		t.Errorf("known_hosts has %d lines", n)
	}

	// Write op-1's binary and configuration over SSH, as a run would.
	// (Run closed its connections when it returned.)
	op1, err := dial(context.Background(), c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	defer op1.Close()
	users, err := roleUsers(*c.Postgres.RoleUsers, env["DATABASE_URL"], env["DATABASE_ROLE_PASSWORD_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	urls := map[Role]string{}
	for _, u := range users {
		urls[u.role] = u.url
	}
	files, err := Render(c, c.Nodes[0], Values{DatabaseURL: env["DATABASE_URL"], DatabaseURLs: urls, ClusterToken: "token", NodeProxyToken: "proxy-token",
		ManagementToken: "management-token", SecretsKeys: env["SECRETS_KEYS"], CloudflareToken: "cf", S3SecretAccessKey: "s3"})
	if err != nil {
		t.Fatal(err)
	}
	bin := File{Path: BinaryPath, Mode: 0o755, Data: []byte("zeitwork v1")}
	ctx := context.Background()
	for _, s := range []Step{fileStep("binary", op1, []File{bin}), fileStep("configuration", op1, files)} {
		if err := s.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Check(ctx); err != nil || !st.Done {
			t.Fatalf("%s after Apply: %+v %v", s.Name, st, err)
		}
	}
	st, err := os.Stat(filepath.Join(roots["op-1"], "etc/zeitwork/operator.env"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("operator.env: %v %v", st, err)
	}
	out = plan()
	if !strings.Contains(out, "[done] op-1: zeitwork binary /usr/local/bin/zeitwork: sha256 ") || !strings.Contains(out, "[done] op-1: configuration (5 files)") {
		t.Errorf("the plan does not see what was written:\n%s", out)
	}
	if !strings.Contains(out, "[todo] op-2: zeitwork binary") {
		t.Errorf("op-2 is not op-1:\n%s", out)
	}
}

func TestPackagesAreQueriedOverSSH(t *testing.T) {
	srv := sshxtest.Start(t)
	cl, err := sshx.Dial(context.Background(), srv.Addr, sshx.Config{User: srv.User, Signer: srv.Signer, KnownHosts: filepath.Join(t.TempDir(), "kh"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	h := NewSSHHost(cl, t.TempDir())
	defer h.Close()
	// openssh-server is installed, or this test would not run.
	missing, err := h.Missing(context.Background(), []string{"openssh-server", "zwtest-no-such-package"})
	if err != nil || len(missing) != 1 || missing[0] != "zwtest-no-such-package" {
		t.Fatalf("Missing = %v, %v", missing, err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
