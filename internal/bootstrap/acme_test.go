package bootstrap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
)

// testCA is a self-signed CA certificate, PEM, as a private ACME CA's
// root is handed out.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ACME root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

const acmeEmailLine = "acme_email: ops@zeitwork.com"

// withACME is the example with the private-CA fields after acme_email.
func withACME(t *testing.T, fields string) []byte {
	t.Helper()
	return edit(t, acmeEmailLine, acmeEmailLine+"\n"+fields)
}

func TestACMEFieldsAreValidatedNamingTheField(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("secret")}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ fields, want string }{
		{"  acme_directory: http://pebble:14000/dir", `platform.acme_directory: "http://pebble:14000/dir" is not an https:// URL`},
		{"  acme_directory: pebble", `platform.acme_directory: "pebble" is not an https:// URL`},
		{"  acme_ca: " + notPEM, "platform.acme_ca: set with platform.acme_directory only"},
		{"  acme_directory: https://pebble:14000/dir\n  acme_ca: " + filepath.Join(dir, "missing.pem"), "platform.acme_ca: neither PEM nor a readable file: open " + filepath.Join(dir, "missing.pem")},
		{"  acme_directory: https://pebble:14000/dir\n  acme_ca: " + notPEM, "platform.acme_ca: holds no PEM certificate"},
		{"  acme_directory: https://pebble:14000/dir\n  acme_ca: " + key, "platform.acme_ca: holds a EC PRIVATE KEY block"},
		{"  acme_directory: https://pebble:14000/dir\n  acme_ca: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"", "platform.acme_ca: certificate 1: "},
		{"  acme_dns_resolvers: [10.0.0.53]", `platform.acme_dns_resolvers[0]: "10.0.0.53" is not host:port of a DNS server`},
		{"  acme_dns_resolvers: ['1.1.1.1:53', 'dns :53']", `platform.acme_dns_resolvers[1]: "dns :53" is not host:port`},
	} {
		_, err := Parse(withACME(t, tc.fields))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v\nwant it to contain %q", tc.fields, err, tc.want)
		}
	}
	_, err := Parse(edit(t, "api_token_env: CLOUDFLARE_API_TOKEN", "api_token_env: CLOUDFLARE_API_TOKEN\n  api_url: cloudflare.internal"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `cloudflare.api_url: "cloudflare.internal" is not an http:// or https:// URL`) {
		t.Errorf("cloudflare.api_url: got %v", err)
	}
}

// TestTheEdgeOrdersFromThePrivateCA: a cluster file naming a private ACME
// CA (its root in a file next to it, or inline) gives every edge, and only
// the edges, that root as a file and the environment the edge's own
// configuration reads it from.
func TestTheEdgeOrdersFromThePrivateCA(t *testing.T) {
	ca := testCA(t)
	const directory = "https://10.0.0.99:14000/dir"
	inline := "  acme_ca: |\n    " + strings.ReplaceAll(strings.TrimSpace(string(ca)), "\n", "\n    ") + "\n"
	for name, caField := range map[string]string{"file": "  acme_ca: ca.pem\n", "inline": inline} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			// Relative to the cluster file, not to the working directory.
			if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o644); err != nil {
				t.Fatal(err)
			}
			raw := withACME(t, "  acme_directory: "+directory+"\n"+caField+"  acme_dns_resolvers: ['10.0.0.53:53', '[fd00::53]:53']")
			raw = bytes.Replace(raw, []byte("api_token_env: CLOUDFLARE_API_TOKEN"), []byte("api_token_env: CLOUDFLARE_API_TOKEN\n  api_url: http://10.0.0.98:8080/client/v4"), 1)
			file := filepath.Join(dir, "cluster.yaml")
			if err := os.WriteFile(file, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range c.Nodes {
				files, err := Render(c, n, fakeValues)
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(files, func(f File) bool { return f.Path == ACMECAFile })
				if !n.Has(RoleEdge) {
					if i >= 0 {
						t.Errorf("%s, not an edge, gets %s", n.Name, ACMECAFile)
					}
					continue
				}
				if i < 0 || !bytes.Equal(bytes.TrimSpace(files[i].Data), bytes.TrimSpace(ca)) || files[i].Mode != 0o644 {
					t.Fatalf("%s: %s not rendered as the CA's root (0644): %+v", n.Name, ACMECAFile, files)
				}
				e := slices.IndexFunc(files, func(f File) bool { return f.Path == "/etc/zeitwork/edge.env" })
				cfg, err := config.ParseFrom[config.Edge](readEnvFile(t, files[e].Data))
				if err != nil {
					t.Fatal(err)
				}
				a := cfg.ACME
				if a.Directory != directory || a.CARoots != ACMECAFile || a.CloudflareAPI != "http://10.0.0.98:8080/client/v4" ||
					strings.Join(a.Resolvers, ",") != "10.0.0.53:53,[fd00::53]:53" {
					t.Errorf("%s: the edge reads %+v", n.Name, a)
				}
			}
		})
	}
}

// Without the fields the edges keep their defaults: nothing is rendered
// for them (the golden files hold this for the example).
func TestWithoutACMEFieldsTheEdgeKeepsItsDefaults(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(c, c.Nodes[7], fakeValues)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == ACMECAFile || strings.Contains(string(f.Data), "ACME_DIRECTORY") {
			t.Errorf("%s renders %s:\n%s", c.Nodes[7].Name, f.Path, f.Data)
		}
		if f.Path != "/etc/zeitwork/edge.env" {
			continue
		}
		cfg, err := config.ParseFrom[config.Edge](readEnvFile(t, f.Data))
		if err != nil {
			t.Fatal(err)
		}
		// The certificate step waits for the ones from the edge's default.
		if got := c.Platform.acmeDirectory(); got != cfg.ACME.Directory {
			t.Errorf("bootstrap waits for certificates from %s, the edge orders from %s", got, cfg.ACME.Directory)
		}
	}
}
