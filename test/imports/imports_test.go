// Package imports enforces the package map: which packages may import
// which. A boundary that only a comment states is crossed by the first
// change in a hurry; this test fails instead (the idea of Tailscale's
// TestDeps). The rules read from the graph `go list` reports for the
// production code (tests may wire roles together, e.g. a real operator
// behind an edge test).
package imports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/zeitwork/zeitwork/"

// pkg is one package of the module: its path relative to the module, the
// module packages it imports directly, and those it depends on at all.
type pkg struct {
	Path    string
	Imports []string
	Deps    []string
}

// roles are the servers `zeitwork <role>` runs. Only the composition root
// (internal/cli) puts them together; they use domain and mechanism
// packages, never each other.
var roles = []string{
	"internal/api", "internal/operator", "internal/nodeagent", "internal/builder", "internal/edge",
}

// workerOnly is the node-local machinery: containerd, netlink, nftables.
// The control plane never links it, so it never needs a worker's
// privileges or libraries, and a node's internals cannot leak into it.
var workerOnly = []string{"internal/nodeagent", "internal/runtime", "internal/network"}

// controlPlane are the packages that must stay clear of workerOnly.
var controlPlane = []string{
	"internal/operator", "internal/management", "internal/edge", "internal/builder",
	"internal/domains", "internal/certs", "internal/scheduler", "internal/ipam",
	"internal/instance", "internal/node", "internal/deployment", "internal/build", "internal/webhook",
	"internal/api", "internal/logs",
}

// domain packages own a table each; they know storage, not transport or roles.
var domain = []string{"internal/instance", "internal/node", "internal/deployment", "internal/build", "internal/account", "internal/project"}

// pure packages decide without I/O: no database, no network, no kernel.
var pure = []string{"internal/scheduler", "internal/ipam", "internal/detect"}

// check returns every broken rule in graph, sorted.
func check(graph []pkg) []string {
	var bad []string
	for _, p := range graph {
		inAny := func(prefixes []string, path string) bool {
			return slices.ContainsFunc(prefixes, func(pre string) bool { return under(path, pre) })
		}
		for _, imp := range p.Imports {
			if inAny(roles, imp) && !under(p.Path, "internal/cli") && !under(p.Path, "bench") && !under(p.Path, "test") && !under(p.Path, imp) {
				bad = append(bad, fmt.Sprintf("%s imports the role %s: only internal/cli composes roles", p.Path, imp))
			}
			if under(imp, "internal/cli") && !under(p.Path, "cmd") && !under(p.Path, "internal/cli") {
				bad = append(bad, fmt.Sprintf("%s imports %s: only cmd/ may", p.Path, imp))
			}
			if inAny(domain, p.Path) && (inAny(roles, imp) || under(imp, "internal/management") || under(imp, "internal/httpapi")) {
				bad = append(bad, fmt.Sprintf("domain package %s imports %s: domains know storage, not roles or transport", p.Path, imp))
			}
		}
		for _, dep := range p.Deps {
			if inAny(controlPlane, p.Path) && inAny(workerOnly, dep) && !under(p.Path, dep) {
				bad = append(bad, fmt.Sprintf("%s depends on %s: the control plane never links the worker's machinery", p.Path, dep))
			}
			if inAny(pure, p.Path) && (under(dep, "internal/db") || dep == "github.com/jackc/pgx/v5" || dep == "net/http") {
				bad = append(bad, fmt.Sprintf("pure package %s depends on %s", p.Path, dep))
			}
		}
	}
	sort.Strings(bad)
	return slices.Compact(bad)
}

// under says whether path is pkg or inside it.
func under(path, pkg string) bool { return path == pkg || strings.HasPrefix(path, pkg+"/") }

// load asks the go command for the module's graph.
func load(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "github.com/zeitwork/zeitwork/...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var graph []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var raw struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		local := func(paths []string) []string {
			var out []string
			for _, p := range paths {
				if rel, ok := strings.CutPrefix(p, module); ok {
					out = append(out, rel)
				} else if p == "github.com/jackc/pgx/v5" || p == "net/http" {
					out = append(out, p)
				}
			}
			return out
		}
		path, _ := strings.CutPrefix(raw.ImportPath, module)
		graph = append(graph, pkg{Path: path, Imports: local(raw.Imports), Deps: local(raw.Deps)})
	}
	return graph
}

func TestPackageBoundaries(t *testing.T) {
	graph := load(t)
	if len(graph) < 30 {
		t.Fatalf("go list found %d packages; the module has more", len(graph))
	}
	for _, problem := range check(graph) {
		t.Error(problem)
	}
}

// TestRulesCatchBackwardsImports proves the checker fails on each kind of
// import the package map forbids, so a green TestPackageBoundaries means
// something.
func TestRulesCatchBackwardsImports(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    pkg
		want string
	}{
		{"operator links the node agent", pkg{Path: "internal/operator", Imports: []string{"internal/nodeagent"}, Deps: []string{"internal/nodeagent", "internal/runtime"}}, "never links the worker"},
		{"management links containerd plumbing", pkg{Path: "internal/management", Deps: []string{"internal/runtime"}}, "never links the worker"},
		{"edge links network through a helper", pkg{Path: "internal/edge", Imports: []string{"internal/foo"}, Deps: []string{"internal/foo", "internal/network"}}, "never links the worker"},
		{"domains imports the edge", pkg{Path: "internal/domains", Imports: []string{"internal/edge"}}, "only internal/cli composes roles"},
		{"a role imports another role", pkg{Path: "internal/builder", Imports: []string{"internal/operator"}}, "only internal/cli composes roles"},
		{"a package imports cli", pkg{Path: "internal/operator", Imports: []string{"internal/cli/version"}}, "only cmd/ may"},
		{"a domain imports transport", pkg{Path: "internal/instance", Imports: []string{"internal/httpapi"}}, "domains know storage"},
		{"the scheduler reads the database", pkg{Path: "internal/scheduler", Deps: []string{"internal/db"}}, "pure package"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := check([]pkg{tc.p})
			if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tc.want) {
				t.Fatalf("check(%+v) = %q, want a problem saying %q", tc.p, got, tc.want)
			}
		})
	}
	allowed := []pkg{
		{Path: "cmd/zeitwork", Imports: []string{"internal/cli"}},
		{Path: "internal/cli", Imports: []string{"internal/operator", "internal/nodeagent", "internal/edge"}},
		{Path: "internal/nodeagent", Imports: []string{"internal/runtime", "internal/network", "internal/instance"}},
		{Path: "internal/operator", Imports: []string{"internal/instance", "internal/scheduler"}, Deps: []string{"internal/instance", "internal/db", "internal/scheduler"}},
		{Path: "internal/edge/internal/x", Imports: []string{"internal/edge"}},
	}
	if got := check(allowed); len(got) != 0 {
		t.Fatalf("allowed imports reported: %q", got)
	}
}
