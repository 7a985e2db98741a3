package bootstrap

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func example(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestTheExampleIsValid(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Nodes) != 8 || c.SSH.User != "root" || c.Nodes[6].Runtime != "" || c.Nodes[5].OS != OSUbuntu || c.Nodes[0].OS != OSDebian {
		t.Errorf("decoded %+v", c)
	}
	if c.Nodes[3].InternalAddress != "10.0.0.21" || c.Nodes[3].Runtime != RuntimeKata {
		t.Errorf("nodes[3] = %+v", c.Nodes[3])
	}
}

func TestUnknownFieldsAreRefused(t *testing.T) {
	raw := strings.Replace(string(example(t)), "acme_email:", "acme_mail:", 1)
	_, err := Parse([]byte(raw))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "acme_mail") {
		t.Fatalf("Parse = %v, want the unknown field named", err)
	}
}

// edit replaces the first occurrence of old in the example.
func edit(t *testing.T, old, new string) []byte {
	t.Helper()
	raw := string(example(t))
	if !strings.Contains(raw, old) {
		t.Fatalf("the example has no %q", old)
	}
	return []byte(strings.Replace(raw, old, new, 1))
}

func TestValidationNamesTheField(t *testing.T) {
	for _, tc := range []struct{ old, new, want string }{
		{"address: 203.0.113.22,", "address: 203.0.113.21,", "nodes[4].address: \"203.0.113.21\" is also the address of nodes[3]"},
		{"address: 203.0.113.22,", "address: '203.0.113.21:22',", "nodes[4].address: \"203.0.113.21:22\" is also the address of nodes[3]"},
		{"internal_address: 10.0.0.22,", "internal_address: 10.0.0.21,", "nodes[4].internal_address: \"10.0.0.21\" is also the internal address of nodes[3]"},
		{"address: 203.0.113.22,", "address: 'x y',", "nodes[4].address: \"x y\" is neither"},
		{"runtime: kata}", "runtime: firecracker}", "nodes[3].runtime: \"firecracker\" is not a runtime handler"},
		{"roles: [builder]}", "roles: [builder], runtime: runc}", "nodes[6].runtime: only workers run instances"},
		{"roles: [edge]", "roles: [edges]", "nodes[7].roles[0]: \"edges\" is not a role"},
		{"roles: [edge]", "roles: [builder]", "nodes: 0 node(s) with role edge, need at least 1"},
		{"roles: [worker], runtime: kata}", "roles: [operator]}", "nodes: 2 node(s) with role worker, need at least 3"},
		{"name: op-2", "name: op-1", "nodes[1].name: \"op-1\" is also the name of nodes[0]"},
		{"os: ubuntu", "os: arch", "nodes[5].os: \"arch\" is not supported"},
		{"api_token_env: CLOUDFLARE_API_TOKEN", "api_token_env: cf-abc123secret", "cloudflare.api_token_env: \"cf-abc123secret\" is not an environment variable name"},
		{"url_env: DATABASE_URL", "url_env: ''", "postgres.url_env: required"},
		{"zeitwork-dns.com]", "zeitwork-dns.com, '*.zeitwork.io']", "platform.domains[3]: \"*.zeitwork.io\" is not a domain name"},
		{"apps_domain: zeitwork.app", "apps_domain: zeitwork.io", "platform.apps_domain: \"zeitwork.io\" is not one of platform.domains"},
		{"prefix: fd7a:7765:7400::/48", "prefix: 10.0.0.0/8", "network.prefix: \"10.0.0.0/8\" is not an IPv6 prefix"},
		{"  existing:", "  minio: {node: op-9, bucket: b, root_user_env: U, root_password_env: P}\n  existing:", "s3: existing and minio are exclusive"},
		{"binary: zeitwork-linux-amd64", "binary: ''", "release.binary: required"},
		{"# tailscale:", "tailscale: {tailnet: x.ts.net}\n#", "tailscale.auth_key_env: required"},
	} {
		_, err := Parse(edit(t, tc.old, tc.new))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q → %q: got %v\nwant it to contain %q", tc.old, tc.new, err, tc.want)
		}
	}
}

func TestAllProblemsAreReportedAtOnce(t *testing.T) {
	_, err := Parse([]byte("platform: {domains: [zeitwork.com]}\nnodes: [{name: a, address: 10.0.0.1, roles: [worker]}]\n"))
	for _, want := range []string{"platform.apps_domain", "platform.edge_host", "cloudflare.api_token_env", "s3: required", "ssh.private_key", "with role operator"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := Parse(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty file: %v", err)
	}
}

func TestInstallerFieldsAreValidated(t *testing.T) {
	c, err := Parse(infraYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	// The registry bootstrap runs is on its node's internal address, and
	// plain HTTP there.
	if c.Registry.Address != "10.0.0.13:5000" || !c.Registry.Insecure {
		t.Errorf("registry %+v", c.Registry)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"node: op-3", "node: op-9", "registry.node: \"op-9\" is not the name of a node"},
		{"  registry: bin/registry\n", "", "release.registry: required with registry.node"},
		{"  minio: bin/minio\n", "", "release.minio: required with s3.minio"},
		{"  buildkitd: bin/buildkitd\n", "", "release.buildctl: set with release.buildkitd only"},
		{"  token_realm: http://operators.zeitwork.internal:8081/v1/registry/token\n", "",
			"registry.token_realm: \"http://10.0.0.11:8081/v1/registry/token\" is at a private IP address, which registry clients refuse"},
		{"  registry_credential_secret_env: REGISTRY_CREDENTIAL_SECRET\n", "", "secrets.registry_credential_secret_env: required"},
	} {
		raw := string(infraYAML(t))
		if !strings.Contains(raw, tc.old) {
			t.Fatalf("no %q in %s", tc.old, raw)
		}
		_, err := Parse([]byte(strings.Replace(raw, tc.old, tc.new, 1)))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q → %q: got %v\nwant it to contain %q", tc.old, tc.new, err, tc.want)
		}
	}
}
