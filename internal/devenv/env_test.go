package devenv_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
)

func TestDevNeedsNoVariables(t *testing.T) {
	cfg, err := config.ParseFrom[config.Dev](devenv.Environment(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Registry.Addr != "127.0.0.1:25000" || !cfg.Registry.Insecure || cfg.Containerd.Addr != "/run/zeitwork-dev/containerd.sock" {
		t.Fatalf("dev defaults = %+v", cfg)
	}
	if cfg.State() != "/var/lib/zeitwork-dev/zw-dev" || devenv.NodeName(string(cfg.Prefix), 2) != "zw-dev-node2" {
		t.Fatalf("state %s, node 2 %s", cfg.State(), devenv.NodeName(string(cfg.Prefix), 2))
	}
	cfg, err = config.ParseFrom[config.Dev](devenv.Environment(map[string]string{"REGISTRY_ADDR": "127.0.0.1:1"}))
	if err != nil || cfg.Registry.Addr != "127.0.0.1:1" {
		t.Fatalf("the caller's variable lost: %v, %v", cfg.Registry.Addr, err)
	}
}

// TestDepsScriptPrintsTheSameEndpoints: scripts/deps.sh and Go read one
// file; `deps.sh env` prints what Go would use.
func TestDepsScriptPrintsTheSameEndpoints(t *testing.T) {
	out, err := exec.Command("bash", "../../scripts/deps.sh", "env").Output()
	if err != nil {
		t.Fatalf("deps.sh env: %v", err)
	}
	want := devenv.Environment(nil)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			t.Fatalf("not an export line: %q", line)
		}
		if v = strings.Trim(v, "'"); want[k] != v {
			t.Errorf("deps.sh env: %s=%s, Go: %q", k, v, want[k])
		}
		n++
	}
	if n < 9 {
		t.Fatalf("deps.sh env printed %d variables:\n%s", n, out)
	}
}
