package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/sshx/sshxtest"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestBootstrapRefusesABadClusterFile(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	bad := strings.Replace(string(raw), "address: 203.0.113.22,", "address: 203.0.113.21,", 1)
	if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, nil, "bootstrap", "--dry-run", "-f", p)
	if code != ExitUsage || !strings.Contains(errOut, "nodes[4].address: \"203.0.113.21\" is also the address of nodes[3]") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "bootstrap", "-f", filepath.Join(t.TempDir(), "none.yaml")); code != ExitUsage || !strings.Contains(errOut, "none.yaml") {
		t.Fatalf("missing file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := run(t, nil, "bootstrap", "--frobnicate"); code != ExitUsage {
		t.Fatalf("unknown flag: exit %d", code)
	}
}

func TestBootstrapChecksBeforeItChangesAnything(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, []string{"CLUSTER_TOKEN=t"}, "bootstrap", "--dry-run", "-f", p)
	if code != ExitFailure || !strings.Contains(errOut, "preflight failed: nothing was changed") ||
		!strings.Contains(out, "[failed] credentials: $DATABASE_URL (postgres.url_env) is not set") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	// A dry run does not generate the key it would generate.
	if _, err := os.Stat(filepath.Join(dir, "id_ed25519")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dry run wrote a key: %v", err)
	}
}

func TestBootstrapStoppedAtAnUnbuiltStepExits3(t *testing.T) {
	err := bootstrapNotBuilt{fmt.Errorf("build-1: buildkitd: %w: install it by hand", bootstrap.ErrNotBuilt)}
	if !errors.Is(err, errNotBuilt) {
		t.Fatal("not recognised as not built")
	}
}

// TestBootstrapDryRunOverSSH runs the command as a person would, against
// eight OpenSSH servers on this machine standing in for the cluster's
// machines. A dry run only reads them (here: this machine's own paths).
func TestBootstrapDryRunOverSSH(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	file := string(raw)
	var first *sshxtest.Server
	for _, ip := range []string{"11", "12", "13", "21", "22", "23", "31", "41"} {
		srv := sshxtest.Start(t)
		if first == nil {
			first = srv
			file = strings.Replace(file, "user: root", "user: "+srv.User, 1)
		}
		srv.Authorize(first.Signer.PublicKey())
		file = strings.Replace(file, "address: 203.0.113."+ip+",", "address: '"+srv.Addr+"',", 1)
	}
	dir := t.TempDir()
	file = strings.Replace(file, "private_key: id_ed25519", "private_key: "+first.KeyFile, 1)
	file = strings.Replace(file, "generate: true", "generate: false", 1)
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zeitwork-linux-amd64"), []byte("zeitwork"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + testdb.Empty(t), "CLOUDFLARE_API_TOKEN=cf", "CLUSTER_TOKEN=t", "NODE_PROXY_TOKEN=p", "MANAGEMENT_TOKEN=m", "DATABASE_ROLE_PASSWORD_KEY=k", "S3_SECRET_ACCESS_KEY=s",
		"SECRETS_KEYS=k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "CERTIFICATE_KEYS=c1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="}
	code, out, errOut := run(t, env, "bootstrap", "--dry-run", "-f", p)
	if code != ExitOK || !strings.Contains(out, "[ok] edge-1: ssh") || !pendingMigrations.MatchString(out) ||
		!strings.Contains(out, "dry run: ") || errOut != "" {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	known, err := os.ReadFile(filepath.Join(dir, "cluster.known_hosts"))
	if err != nil || strings.Count(string(known), "\n") != 8 {
		t.Fatalf("known_hosts next to cluster.yaml: %v\n%s", err, known)
	}
	// A dry run changes nothing: the database is still empty.
	if code, out, _ := run(t, env, "bootstrap", "--dry-run", "-f", p); code != ExitOK || !pendingMigrations.MatchString(out) {
		t.Fatalf("second dry run: exit %d\n%s", code, out)
	}
}

// pendingMigrations is the plan's line for an empty database: every
// migration to apply, however many there are.
var pendingMigrations = regexp.MustCompile(`\[todo\] database: migrations: [1-9][0-9]* to apply`)
