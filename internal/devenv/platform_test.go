package devenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/devenv"
)

// TestDevSecretsHaveATokenPerAPI: dev makes a distinct token for each
// internal API and a database password, keeps them across runs, and adds
// what a secrets.env of an older version lacks without changing the rest
// (its key encrypts variables already stored).
func TestDevSecretsHaveATokenPerAPI(t *testing.T) {
	dir := t.TempDir()
	s, err := devenv.LoadSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{s.ClusterToken: true, s.NodeProxyToken: true, s.ManagementToken: true, s.DatabasePassword: true}
	if len(distinct) != 4 || distinct[""] || s.SecretsKeys == "" {
		t.Fatalf("dev secrets %+v", s)
	}
	again, err := devenv.LoadSecrets(dir)
	if err != nil || again != s {
		t.Fatalf("second run: %+v, %v", again, err)
	}

	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, "secrets.env"), []byte("CLUSTER_TOKEN=c0ffee\nSECRETS_KEYS=dev1:abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = devenv.LoadSecrets(old)
	if err != nil || s.ClusterToken != "c0ffee" || s.SecretsKeys != "dev1:abc" || s.NodeProxyToken == "" || s.ManagementToken == "" || s.DatabasePassword == "" {
		t.Fatalf("older file: %+v, %v", s, err)
	}
	b, _ := os.ReadFile(filepath.Join(old, "secrets.env"))
	lines := strings.Split(string(b), "\n")
	if lines[0] != "CLUSTER_TOKEN=c0ffee" || lines[1] != "SECRETS_KEYS=dev1:abc" || !strings.Contains(string(b), "NODE_PROXY_TOKEN="+s.NodeProxyToken) {
		t.Fatalf("secrets.env now:\n%s", b)
	}
	if fi, _ := os.Stat(filepath.Join(old, "secrets.env")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}
