package bootstrap

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeValues look like the real secrets, including characters an
// environment file must keep literal.
var fakeValues = Values{
	DatabaseURL: "postgres://zeitwork:pa$$w%40rd@db.internal:5432/zeitwork?sslmode=require",
	DatabaseURLs: map[Role]string{
		RoleAPI: "postgres://zw_api:pa$$w%40rd-api@db.internal:5432/zeitwork?sslmode=require", RoleOperator: "postgres://zw_operator:pw-op@db.internal:5432/zeitwork?sslmode=require",
		RoleBuilder: "postgres://zw_builder:pw-b@db.internal:5432/zeitwork?sslmode=require", RoleWorker: "postgres://zw_nodeagent:pw-n@db.internal:5432/zeitwork?sslmode=require",
		RoleEdge: "postgres://zw_edge:pw-e@db.internal:5432/zeitwork?sslmode=require",
	},
	ClusterToken:      "cluster-token-0123456789",
	NodeProxyToken:    "node-proxy-token-0123456789",
	ManagementToken:   "management-token-0123456789",
	SecretsKeys:       "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	CertificateKeys:   "c1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
	CloudflareToken:   "cf-token",
	S3SecretAccessKey: `s3\secret`,
}

func TestRenderMatchesTheGoldenFiles(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	matchGolden(t, c, "render", fakeValues)
}

// The example with MinIO, the registry, BuildKit's and Kata's releases
// installed by bootstrap (testdata/render-installers).
func TestRenderWithTheInstallersMatchesTheGoldenFiles(t *testing.T) {
	c, err := Parse(infraYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	matchGolden(t, c, "render-installers", infraValues)
}

func matchGolden(t *testing.T, c *Cluster, golden string, values Values) {
	t.Helper()
	for _, n := range c.Nodes {
		files, err := Render(c, n, values)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		dir := filepath.Join("testdata", golden, n.Name)
		if *update {
			os.RemoveAll(dir)
		}
		seen := map[string]bool{}
		for _, f := range files {
			golden := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(f.Path, "/"), "/", "_"))
			seen[filepath.Base(golden)] = true
			want := strings.HasSuffix(f.Path, ".env") == (f.Mode == 0o600)
			if !want {
				t.Errorf("%s %s: mode %v; environment files and only they are 0600", n.Name, f.Path, f.Mode)
			}
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, f.Data, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			raw, err := os.ReadFile(golden)
			if err != nil {
				t.Errorf("%s: %v (run with -update to write it)", n.Name, err)
				continue
			}
			if !bytes.Equal(raw, f.Data) {
				t.Errorf("%s %s differs from %s:\n%s", n.Name, f.Path, golden, f.Data)
			}
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !seen[e.Name()] {
				t.Errorf("%s: golden file %s is no longer rendered", n.Name, e.Name())
			}
		}
	}
}

// TestEnvironmentFilesConfigureTheirRoles reads every rendered environment
// file the way systemd would and parses it with the role's own
// configuration: a misspelt or missing variable fails here, not on a node.
func TestEnvironmentFilesConfigureTheirRoles(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	role := map[string]Role{"operator.env": RoleOperator, "api.env": RoleAPI, "nodeagent.env": RoleWorker, "builder.env": RoleBuilder, "edge.env": RoleEdge}
	parse := map[string]func(map[string]string) error{
		"operator.env":  func(m map[string]string) error { _, err := config.ParseFrom[config.Operator](m); return err },
		"api.env":       func(m map[string]string) error { _, err := config.ParseFrom[config.API](m); return err },
		"nodeagent.env": func(m map[string]string) error { _, err := config.ParseFrom[config.NodeAgent](m); return err },
		"builder.env":   func(m map[string]string) error { _, err := config.ParseFrom[config.Builder](m); return err },
		"edge.env":      func(m map[string]string) error { _, err := config.ParseFrom[config.Edge](m); return err },
	}
	checked := map[string]bool{}
	for _, n := range c.Nodes {
		files, err := Render(c, n, fakeValues)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p, ok := parse[filepath.Base(f.Path)]
			if !ok {
				continue
			}
			env := readEnvFile(t, f.Data)
			if err := p(env); err != nil {
				t.Errorf("%s %s: %v", n.Name, f.Path, err)
			}
			if env["DATABASE_URL"] != fakeValues.DatabaseURLs[role[filepath.Base(f.Path)]] {
				t.Errorf("%s %s: DATABASE_URL read back as %q", n.Name, f.Path, env["DATABASE_URL"])
			}
			if n.Name == "wk-1" && f.Path == "/etc/zeitwork/nodeagent.env" &&
				(env["RUNTIME_HANDLER"] != "io.containerd.kata.v2" || env["NODE_INTERNAL_ADDRESS"] != "10.0.0.21:8090") {
				t.Errorf("wk-1 nodeagent.env: %v", env)
			}
			checked[filepath.Base(f.Path)] = true
		}
	}
	if len(checked) != len(parse) {
		t.Errorf("checked %v, want every role", checked)
	}
}

// readEnvFile reads what envFile writes as systemd does: KEY=value, with
// single-quoted values taken literally.
func readEnvFile(t *testing.T, data []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line %q", line)
		}
		if strings.HasPrefix(v, "'") {
			v = strings.TrimSuffix(strings.TrimPrefix(v, "'"), "'")
		}
		m[k] = v
	}
	return m
}

func TestEnvFileRefusesWhatItCannotWriteLiterally(t *testing.T) {
	for _, v := range []string{"a\nb", "it's"} {
		if _, err := envFile([]kv{{"K", v}}); err == nil || !strings.Contains(err.Error(), "K:") {
			t.Errorf("envFile(%q) = %v", v, err)
		}
	}
}

func TestDistrosDifferInPackagesOnly(t *testing.T) {
	kata := Node{Roles: []Role{RoleWorker}, Runtime: RuntimeKata}
	deb, ubu := DistroOf(OSDebian).Packages(kata), DistroOf(OSUbuntu).Packages(kata)
	if !strings.Contains(strings.Join(ubu, " "), "linux-modules-extra") || strings.Contains(strings.Join(deb, " "), "linux-modules-extra") {
		t.Errorf("debian %v, ubuntu %v", deb, ubu)
	}
	if got := DistroOf(OSDebian).Packages(Node{Roles: []Role{RoleEdge}}); len(got) != 2 {
		t.Errorf("an edge needs %v", got)
	}
}

// TestUnitsPassSystemdAnalyzeVerify has systemd itself read every unit:
// an unknown key or a malformed directive is a warning it prints.
func TestUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Unavailable(t, "systemd-analyze (apt package systemd)", err)
	}
	// With the installers: MinIO's and the registry's units too.
	c, err := Parse(infraYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The distribution's containerd unit, which the node agent requires.
	stub := "[Unit]\nDescription=containerd\n[Service]\nExecStart=/bin/true\n"
	if err := os.WriteFile(filepath.Join(dir, "containerd.service"), []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, n := range []Node{c.Nodes[0], c.Nodes[2], c.Nodes[3], c.Nodes[6], c.Nodes[7]} {
		files, err := Render(c, n, fakeValues)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Path, ".service") {
				continue
			}
			// verify insists that ExecStart exists here and now.
			data := strings.NewReplacer(BinaryPath, "/bin/true", BuildkitdPath, "/bin/true", MinIOPath, "/bin/true", RegistryPath, "/bin/true").Replace(string(f.Data))
			p := filepath.Join(dir, filepath.Base(f.Path))
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			units = append(units, p)
		}
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if len(units) != 9 {
		t.Errorf("verified %d units, want all 9", len(units))
	}
}

// TestOnlyTheControlPlaneHoldsTheVariablesKey: workers and edges get no
// SECRETS_KEYS (a compromised node must not decrypt every project's
// variables); workers get every operator to fetch theirs from, and edges a
// ring of their own for certificate keys.
func TestOnlyTheControlPlaneHoldsTheVariablesKey(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		files, err := Render(c, n, fakeValues)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Path, ".env") {
				continue
			}
			env := string(f.Data)
			holdsKey := strings.Contains(env, "\nSECRETS_KEYS=")
			switch filepath.Base(f.Path) {
			case "api.env", "operator.env":
				if !holdsKey {
					t.Errorf("%s %s has no SECRETS_KEYS", n.Name, f.Path)
				}
			default:
				if holdsKey {
					t.Errorf("%s %s holds SECRETS_KEYS", n.Name, f.Path)
				}
			}
			if filepath.Base(f.Path) == "nodeagent.env" && !strings.Contains(env, "\nOPERATOR_URL=http://10.0.0.11:8081,http://10.0.0.12:8081,http://10.0.0.13:8081\n") {
				t.Errorf("%s: a worker without every operator's URL:\n%s", n.Name, env)
			}
			if filepath.Base(f.Path) == "edge.env" && !strings.Contains(env, "\nCERTIFICATE_KEYS="+fakeValues.CertificateKeys+"\n") {
				t.Errorf("%s: an edge without its certificate ring", n.Name)
			}
		}
	}
}
