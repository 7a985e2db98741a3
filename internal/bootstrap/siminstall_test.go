package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestInstallersOnSimulatedMachines runs bootstrap for real with the
// installers on (ZEITWORK_TEST_SIMULATED_CLUSTER=1; minutes): MinIO on
// op-1 with its bucket, the registry on op-3 storing into it, buildkitd,
// buildctl and the CNI plugins on build-1 (the binaries scripts/deps.sh
// caches), each started by systemd. The run gets past build-1 (where it
// stopped before) and everything up to the platform certificates, which
// need Cloudflare, is done; a second run applies nothing before them.
func TestInstallersOnSimulatedMachines(t *testing.T) {
	if os.Getenv(SimulatedClusterEnv) != "1" {
		t.Skipf("set %s=1 to run bootstrap on simulated machines (minutes, needs the Debian archive)", SimulatedClusterEnv)
	}
	names := []string{"op-1", "op-2", "op-3", "wk-1", "wk-2", "wk-3", "build-1", "edge-1"}
	sim := simmachine.StartWith(t, len(names), simmachine.Options{Internet: true, Containers: true})
	dir := t.TempDir()
	bin := filepath.Join(dir, "zeitwork-linux-amd64")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/zeitwork")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	raw := string(clusterFile(t, sim, names))
	raw = regexp.MustCompile(`(?s)\ns3:\n.*?\nssh:`).ReplaceAllString(raw,
		"\ns3:\n  minio: {node: op-1, bucket: zeitwork, root_user_env: MINIO_ROOT_USER, root_password_env: MINIO_ROOT_PASSWORD}\n\nssh:")
	raw = regexp.MustCompile(`(?s)\nregistry:\n.*?\nrelease:\n.*?\n\n`).ReplaceAllString(raw, "\nregistry:\n  node: op-3\nrelease:\n"+
		"  binary: zeitwork-linux-amd64\n"+
		"  buildkitd: "+testenv.Binary(t, "buildkitd")+"\n"+
		"  buildctl: "+testenv.Binary(t, "buildctl")+"\n"+
		"  cni_plugins: "+testenv.Binary(t, "cni")+"\n"+
		"  minio: "+testenv.Binary(t, "minio")+"\n"+
		"  registry: "+testenv.Binary(t, "registry")+"\n\n")
	file := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(file, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL := testdb.Empty(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = sim.Expose(t, u.Host)
	env := config.Environ(append(os.Environ(),
		"DATABASE_URL="+u.String(),
		"CLOUDFLARE_API_TOKEN=cf",
		"CLUSTER_TOKEN=token",
		"SECRETS_KEYS=k1:"+strings.Repeat("A", 43)+"=",
		"CERTIFICATE_KEYS=c1:"+strings.Repeat("B", 43)+"=",
		"DATABASE_ROLE_PASSWORD_KEY=role-password-key",
		"NODE_PROXY_TOKEN=proxy-token",
		"MANAGEMENT_TOKEN=management-token",
		"MINIO_ROOT_USER=zeitwork-root",
		"MINIO_ROOT_PASSWORD=minio-root-password",
	))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	run := func() string {
		t.Helper()
		c, err := bootstrap.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		b := &bootstrap.Bootstrap{Cluster: c, Env: env, Out: &out, Wait: 45 * time.Second}
		start := time.Now()
		_, err = b.Run(ctx)
		t.Logf("bootstrap in %v:\n%s", time.Since(start).Round(time.Second), out.String())
		// The edges cannot obtain certificates here (no Cloudflare): the
		// run ends waiting for them, every step before done.
		if err == nil || errors.Is(err, bootstrap.ErrPreflight) || !strings.Contains(err.Error(), "certificates: ") {
			t.Fatalf("bootstrap: %v; want it to get as far as the certificates", err)
		}
		return out.String()
	}
	out := run()
	for _, want := range []string{
		"[applied] op-1: MinIO /usr/local/bin/minio: sha256 ",
		"[applied] op-1: start minio.service: running",
		"[applied] op-1: MinIO bucket zeitwork: at http://" + sim.Machines[0].Addr + ":9000",
		"[applied] op-3: start registry.service: running",
		"[applied] build-1: buildkitd: 5 files as rendered",
		"[applied] build-1: start buildkit.service: running",
		"[applied] build-1: start buildkit.service zeitwork-builder.service: running",
		"] cluster: workers and operators registered: 3 workers active",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run lacks %q", want)
		}
	}

	// On build-1, buildkitd's worker gives RUN steps their CNI network
	// (what the builder insists on), and the builder keeps running; the
	// registry answers the distribution API from its bucket.
	cl, err := sim.Machines[6].Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	workers, err := cl.Run(ctx, "buildctl --addr "+bootstrap.BuildkitAddr+" debug workers -v", nil)
	if err != nil || !regexp.MustCompile(`org\.mobyproject\.buildkit\.worker\.network:\s+cni\n`).Match(workers) {
		t.Errorf("buildkitd's workers: %v\n%s", err, workers)
	}
	time.Sleep(5 * time.Second) // a builder that refused buildkitd would have exited by now
	if st, err := cl.Run(ctx, "systemctl is-active zeitwork-builder buildkit; journalctl -u zeitwork-builder --no-pager -n 20", nil); err != nil || !strings.HasPrefix(string(st), "active\nactive\n") {
		t.Errorf("build-1: %v\n%s", err, st)
	}
	if v2, err := cl.Run(ctx, "curl -fsS -o /dev/null -w '%{http_code}' http://"+sim.Machines[2].Addr+":5000/v2/", nil); err != nil || string(v2) != "200" {
		t.Errorf("the registry from build-1: %v %s", err, v2)
	}
	cl.Close()

	again := run()
	for _, line := range strings.Split(again, "\n") {
		if strings.Contains(line, "[apply]") && !strings.Contains(line, "certificates") {
			t.Errorf("the second run changed something: %s", line)
		}
	}
}
