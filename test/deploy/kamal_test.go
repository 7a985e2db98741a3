package deploy

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// kamalConfig is the part of Kamal 2's deploy.yml this test checks.
type kamalConfig struct {
	Service string `yaml:"service"`
	Image   string `yaml:"image"`
	Servers map[string]struct {
		Hosts []string `yaml:"hosts"`
		Cmd   string   `yaml:"cmd"`
	} `yaml:"servers"`
	Proxy struct {
		SSL         any      `yaml:"ssl"` // true, or the certificate's secrets
		Hosts       []string `yaml:"hosts"`
		AppPort     int      `yaml:"app_port"`
		Healthcheck struct {
			Path string `yaml:"path"`
		} `yaml:"healthcheck"`
	} `yaml:"proxy"`
	Registry struct {
		Password []string `yaml:"password"`
	} `yaml:"registry"`
	Builder struct {
		Dockerfile string `yaml:"dockerfile"`
		Context    string `yaml:"context"`
	} `yaml:"builder"`
	Env struct {
		Clear  map[string]string `yaml:"clear"`
		Secret []string          `yaml:"secret"`
	} `yaml:"env"`
}

// TestKamalDeploysTheAPI checks deploy/kamal against what `zeitwork api`
// reads, as far as it can be without Kamal (which needs RubyGems): every
// variable it sets is one the api reads, the api's configuration parses
// from exactly these variables, secrets are never in the clear, the
// health check path answers 200 on the api's real handler, and the
// Dockerfile serves the port and dashboard directory the file names.
func TestKamalDeploysTheAPI(t *testing.T) {
	dir := filepath.Join(repo, "deploy", "kamal")
	raw, err := os.ReadFile(filepath.Join(dir, "deploy.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kamalConfig
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("deploy.yml: %v", err)
	}
	if k.Service == "" || k.Image == "" || len(k.Servers) == 0 {
		t.Fatalf("deploy.yml needs service, image and servers: %+v", k)
	}

	// The variables: only ones the api reads, and the secret ones only
	// as secrets (passed in an env file, never on docker's command line).
	known := apiVariables(reflect.TypeFor[config.API](), false)
	env := map[string]string{}
	for name, v := range k.Env.Clear {
		kv, ok := known[name]
		switch {
		case !ok:
			t.Errorf("env.clear.%s: not a variable `zeitwork api` reads", name)
		case kv.secret:
			t.Errorf("env.clear.%s: a secret in the clear; list it under env.secret", name)
		}
		env[name] = v
	}
	fakes := fakeSecrets(t)
	for _, s := range k.Env.Secret {
		name, _, _ := strings.Cut(s, ":")
		if _, ok := known[name]; !ok {
			t.Errorf("env.secret %s: not a variable `zeitwork api` reads", name)
		}
		v, ok := fakes[name]
		if !ok {
			t.Fatalf("env.secret %s: the test has no value for it; add one to fakeSecrets", name)
		}
		env[name] = v
	}
	for name, kv := range known {
		if kv.required {
			if _, ok := env[name]; !ok {
				t.Errorf("%s: required by `zeitwork api`, set by neither env.clear nor env.secret", name)
			}
		}
	}
	cfg, err := config.ParseFrom[config.API](env)
	if err != nil {
		t.Fatalf("`zeitwork api` refuses deploy.yml's environment: %v", err)
	}
	if cfg.S3 == nil || cfg.Secrets.Keys == nil || cfg.GitHub.AppID == 0 {
		t.Errorf("uploads, variables or the GitHub App would be off: %+v", cfg)
	}

	// The proxy: the app port is the api's, and the health check path is
	// a route of the api that answers 200 without a database.
	_, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || port != strconv.Itoa(k.Proxy.AppPort) {
		t.Errorf("proxy.app_port %d, but the api listens on %q", k.Proxy.AppPort, cfg.Addr)
	}
	// Kamal refuses ssl: true (Let's Encrypt) on more than one host: the
	// certificate must then be given, by the names of two secrets.
	var certSecrets []string
	switch ssl := k.Proxy.SSL.(type) {
	case bool:
		for role, srv := range k.Servers {
			if !ssl || len(srv.Hosts) != 1 {
				t.Errorf("proxy.ssl %v with servers.%s on %d hosts: Kamal needs ssl with certificate_pem and private_key_pem there", ssl, role, len(srv.Hosts))
			}
		}
	case map[string]any:
		for _, key := range []string{"certificate_pem", "private_key_pem"} {
			name, _ := ssl[key].(string)
			if name == "" {
				t.Errorf("proxy.ssl.%s: want the name of a secret", key)
			}
			certSecrets = append(certSecrets, name)
		}
	default:
		t.Errorf("proxy.ssl: %v (%T), want true or the certificate's secrets", k.Proxy.SSL, k.Proxy.SSL)
	}
	if len(k.Proxy.Hosts) == 0 {
		t.Errorf("proxy.hosts: none; kamal-proxy would send every host to the api")
	}
	h := (&api.API{Log: zlog.Discard()}).Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, k.Proxy.Healthcheck.Path, nil))
	if k.Proxy.Healthcheck.Path == "" || rec.Code != http.StatusOK {
		t.Errorf("proxy.healthcheck.path %q: the api answers %d %s", k.Proxy.Healthcheck.Path, rec.Code, rec.Body)
	}
	for role, s := range k.Servers {
		if s.Cmd != "api" || len(s.Hosts) == 0 {
			t.Errorf("servers.%s: want hosts and cmd api (the image's entrypoint is zeitwork), got %+v", role, s)
		}
	}

	// The image: built from the repository's root with the Dockerfile
	// beside deploy.yml, running zeitwork, exposing the app port, with the
	// dashboard where API_WEB_DIR says.
	if k.Builder.Context != "." || filepath.Clean(k.Builder.Dockerfile) != "deploy/kamal/Dockerfile" {
		t.Errorf("builder: %+v; kamal runs from the repository's root", k.Builder)
	}
	df, err := os.ReadFile(filepath.Join(repo, k.Builder.Dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"EXPOSE " + port,
		`ENTRYPOINT ["/usr/local/bin/zeitwork"]`,
		"go build -trimpath -o /out/zeitwork ./cmd/zeitwork",
		"/src/packages/web/.output/public " + cfg.WebDir,
	} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
	for _, p := range regexp.MustCompile(`(?m)^COPY (?:--\S+ )*(\S+) `).FindAllStringSubmatch(string(df), -1) {
		if strings.HasPrefix(p[0], "COPY --from") || p[1] == "." {
			continue
		}
		if _, err := os.Stat(filepath.Join(repo, p[1])); err != nil {
			t.Errorf("Dockerfile copies %s, which the repository does not have", p[1])
		}
	}

	// .kamal/secrets (deploy/kamal/secrets): every secret deploy.yml needs,
	// each only a reference to the deploying shell's environment.
	secrets := readSecrets(t, filepath.Join(dir, "secrets"))
	for _, s := range slices.Concat(k.Env.Secret, k.Registry.Password, certSecrets) {
		name, src, ok := strings.Cut(s, ":")
		if !ok {
			src = name
		}
		if _, ok := secrets[src]; !ok {
			t.Errorf("secrets: no %s, which deploy.yml needs", src)
		}
	}
	for name, v := range secrets {
		if v != "$"+name && !strings.HasPrefix(v, "$(") {
			t.Errorf("secrets: %s holds a value (%q): refer to the environment ($%s) or a password manager", name, v, name)
		}
	}
}

type apiVariable struct{ required, secret bool }

// apiVariables are the variables config.API reads, walking its nested
// structs as caarlos0/env does. A struct behind a pointer is optional (the
// api enables it only when configured), so its required variables are not.
func apiVariables(t reflect.Type, optional bool) map[string]apiVariable {
	out := map[string]apiVariable{}
	secretTypes := []reflect.Type{reflect.TypeFor[config.Secret](), reflect.TypeFor[config.PostgresURL]()}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		name, opts, _ := strings.Cut(tag, ",")
		ft, opt := f.Type, optional
		for ft.Kind() == reflect.Pointer {
			ft, opt = ft.Elem(), true
		}
		if name == "" {
			if ft.Kind() == reflect.Struct && f.IsExported() {
				for n, v := range apiVariables(ft, opt) {
					out[n] = v
				}
			}
			continue
		}
		// A key ring is secret whatever its Go type.
		secret := slices.Contains(secretTypes, f.Type) || strings.HasSuffix(name, "_KEYS")
		out[name] = apiVariable{required: !optional && strings.Contains(opts, "required"), secret: secret}
	}
	return out
}

// fakeSecrets are values of the right shape for each secret the api may
// be given.
func fakeSecrets(t *testing.T) map[string]string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"DATABASE_URL":           "postgres://zw_api:password@db.example.ts.net:5432/zeitwork?sslmode=require",
		"CLUSTER_TOKEN":          "cluster-token-0123456789abcdef",
		"SECRETS_KEYS":           "k1:" + base64.StdEncoding.EncodeToString(key),
		"S3_SECRET_ACCESS_KEY":   "s3-secret",
		"GITHUB_CLIENT_SECRET":   "client-secret",
		"GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\n…\n-----END RSA PRIVATE KEY-----\n",
		"GITHUB_WEBHOOK_SECRET":  "webhook-secret",
	}
}

// readSecrets reads a dotenv file as Kamal does, without expanding it.
func readSecrets(t *testing.T, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=value", p, line)
		}
		out[name] = v
	}
	return out
}
