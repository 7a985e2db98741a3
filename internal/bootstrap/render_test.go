package bootstrap

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
			if !strings.HasSuffix(f.Path, ".service") && !strings.HasSuffix(f.Path, ".socket") {
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
	if len(units) != 12 { // 3 of them sockets
		t.Errorf("verified %d units, want all 12", len(units))
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

// TestEdgeAndAPIListenOnSocketsSystemdHolds: the edge's and the api's
// ports are systemd sockets passed to the service by name, on the ports
// the roles would otherwise listen on themselves; the service requires
// them (started with it, never restarted with it) and the edge holds no
// capability to bind low ports.
func TestEdgeAndAPIListenOnSocketsSystemdHolds(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ unit, name, listen string }
	cases := []struct {
		node, service string
		sockets       []want
		addr          func(env map[string]string) ([]string, error)
	}{
		{"edge-1", "zeitwork-edge.service", []want{{"zeitwork-edge.socket", "http", "80"}, {"zeitwork-edge-https.socket", "https", "443"}},
			func(env map[string]string) ([]string, error) {
				cfg, err := config.ParseFrom[config.Edge](env)
				return []string{cfg.HTTPAddr, cfg.HTTPSAddr}, err
			}},
		{"op-1", "zeitwork-api.service", []want{{"zeitwork-api.socket", "http", "8080"}},
			func(env map[string]string) ([]string, error) {
				cfg, err := config.ParseFrom[config.API](env)
				return []string{cfg.Addr}, err
			}},
	}
	for _, tc := range cases {
		n := c.node(tc.node)
		files, err := Render(c, n, fakeValues)
		if err != nil {
			t.Fatal(err)
		}
		file := func(p string) string {
			for _, f := range files {
				if f.Path == p {
					return string(f.Data)
				}
			}
			t.Fatalf("%s: %s is not rendered", tc.node, p)
			return ""
		}
		units := Units(n)
		service := file("/etc/systemd/system/" + tc.service)
		if strings.Contains(service, "CAP_NET_BIND_SERVICE") || !strings.Contains(service, "\nCapabilityBoundingSet=\n") && tc.node == "edge-1" {
			t.Errorf("%s holds capabilities:\n%s", tc.service, service)
		}
		var names []string
		for _, so := range tc.sockets {
			names = append(names, so.unit)
			unit := file("/etc/systemd/system/" + so.unit)
			for _, line := range []string{"ListenStream=" + so.listen, "FileDescriptorName=" + so.name, "Service=" + tc.service, "WantedBy=sockets.target"} {
				if !strings.Contains(unit, "\n"+line+"\n") {
					t.Errorf("%s %s lacks %q:\n%s", tc.node, so.unit, line, unit)
				}
			}
			if !strings.Contains(service, "\nRequires="+so.unit+"\n") || !regexp.MustCompile(`\nAfter=.* `+regexp.QuoteMeta(so.unit)+`[ \n]`).MatchString(service) {
				t.Errorf("%s %s does not require and follow %s:\n%s", tc.node, tc.service, so.unit, service)
			}
			// Bootstrap enables and starts it in the same step as the service.
			if i, j := slices.Index(units, so.unit), slices.Index(units, tc.service); i < 0 || i > j {
				t.Errorf("%s units %v: %s not before %s", tc.node, units, so.unit, tc.service)
			}
		}
		if !strings.Contains(service, "\nSockets="+strings.Join(names, " ")+"\n") {
			t.Errorf("%s %s is not passed %v:\n%s", tc.node, tc.service, names, service)
		}
		// The ports are the role's own default addresses, which bootstrap
		// does not change: without the socket, it would listen there.
		addrs, err := tc.addr(readEnvFile(t, []byte(file("/etc/zeitwork/"+strings.TrimSuffix(strings.TrimPrefix(tc.service, "zeitwork-"), ".service")+".env"))))
		if err != nil {
			t.Fatal(err)
		}
		for i, so := range tc.sockets {
			if addrs[i] != ":"+so.listen {
				t.Errorf("%s: %s listens on %s, the role's address is %s", tc.node, so.unit, so.listen, addrs[i])
			}
		}
	}
}
