// Package deploy tests the infrastructure code in deploy/ (the Pulumi
// program, the Kamal configuration) against what the Go side expects of it,
// so that neither drifts from the other unnoticed.
package deploy

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

const repo = "../.."

// TestPulumiProgram runs deploy/pulumi's unit tests (Pulumi's own mocks:
// no provider plugin, no cloud account), then reads the nodes block the
// program renders for cluster.yaml with bootstrap's own parser, so a
// rendering bootstrap refuses fails here.
func TestPulumiProgram(t *testing.T) {
	npm := nodeEnv(t)
	// A copy without node_modules: npm ci installs from the lock file, as
	// a fresh clone would, and the worktree is left untouched.
	dir := filepath.Join(t.TempDir(), "pulumi")
	copyTree(t, filepath.Join(repo, "deploy", "pulumi"), dir)
	out := filepath.Join(t.TempDir(), "nodes.yaml")
	for _, args := range [][]string{{"ci", "--no-audit", "--no-fund"}, {"test"}} {
		cmd := exec.Command("npm", args...)
		cmd.Dir, cmd.Env = dir, append(npm, "ZW_CLUSTER_NODES_OUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}

	block, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the program's tests rendered no nodes block: %v", err)
	}
	example, err := os.ReadFile(filepath.Join(repo, "deploy", "cluster.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(example, []byte("\nnodes:\n"))
	if i < 0 {
		t.Fatal("deploy/cluster.example.yaml has no nodes block")
	}
	file := append(example[:i+1:i+1], block...)
	c, err := bootstrap.Parse(file)
	if err != nil {
		t.Fatalf("bootstrap refuses the rendered nodes block: %v\n%s", err, block)
	}
	got := map[string]bootstrap.Node{}
	for _, n := range c.Nodes {
		got[n.Name] = n
	}
	if len(c.Nodes) != 9 {
		t.Fatalf("%d nodes, want the 9 with roles (not the Postgres machine):\n%s", len(c.Nodes), block)
	}
	wk := got["wk-1"]
	if wk.Address != "198.51.100.4" || wk.InternalAddress != "wk-1.example.ts.net" || wk.Runtime != bootstrap.RuntimeKata ||
		wk.OS != bootstrap.OSUbuntu || !wk.Has(bootstrap.RoleWorker) {
		t.Errorf("wk-1 = %+v", wk)
	}
	// The worker's node-proxy address, which the edges dial, is on the tailnet.
	if a := wk.AgentAddress(); a != "wk-1.example.ts.net:8090" {
		t.Errorf("wk-1's node-proxy address %q", a)
	}
	if op := got["op-1"]; !op.Has(bootstrap.RoleOperator) || !op.Has(bootstrap.RoleAPI) {
		t.Errorf("op-1 = %+v", op)
	}
	if e := got["edge-1"]; e.Region != "eu-central-1" || !e.Has(bootstrap.RoleEdge) {
		t.Errorf("edge-1 = %+v", e)
	}
}

// nodeEnv returns an environment whose PATH leads to Node 22 and its npm
// (scripts/node22.sh), else to the machine's own node and npm.
func nodeEnv(t *testing.T) []string {
	t.Helper()
	path := os.Getenv("PATH")
	if b, err := exec.Command("bash", filepath.Join(repo, "scripts", "node22.sh")).Output(); err == nil {
		path = strings.TrimSpace(string(b)) + string(os.PathListSeparator) + path
	}
	env := append(os.Environ(), "PATH="+path)
	for _, tool := range []string{"node", "npm"} {
		cmd := exec.Command(tool, "--version")
		cmd.Env = env
		if err := cmd.Run(); err != nil {
			testenv.Unavailable(t, tool, err)
		}
	}
	return env
}

// copyTree copies src to dst, leaving out node_modules.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return errors.New(p + ": not a regular file")
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
