package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
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
