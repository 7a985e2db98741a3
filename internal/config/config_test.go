package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func TestMissingRequiredVariableIsNamed(t *testing.T) {
	_, err := ParseFrom[Migrate](map[string]string{})
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if !slices.Equal(cerr.Vars(), []string{"DATABASE_URL"}) {
		t.Fatalf("vars = %v, want [DATABASE_URL]", cerr.Vars())
	}
	if !strings.Contains(err.Error(), "DATABASE_URL: required but not set") {
		t.Fatalf("message = %q", err)
	}
}

func TestMalformedVariablesAreNamed(t *testing.T) {
	_, err := ParseFrom[Operator](map[string]string{
		"DATABASE_URL":       "mysql://root@db/zeitwork",
		"DATABASE_MAX_CONNS": "lots",
		"LOG_LEVEL":          "shouty",
		"QUEUE_RESCUE_AFTER": "soon",
		"MANAGEMENT_TOKEN":   "m",
	})
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	want := []string{"DATABASE_MAX_CONNS", "DATABASE_URL", "LOG_LEVEL", "QUEUE_RESCUE_AFTER"}
	if !slices.Equal(cerr.Vars(), want) {
		t.Fatalf("vars = %v, want %v (%v)", cerr.Vars(), want, err)
	}
	if !strings.Contains(err.Error(), `scheme "mysql" is not postgres://`) {
		t.Fatalf("message does not say why DATABASE_URL is wrong: %q", err)
	}
}

// A rescue sooner than a task's timeout is refused by name, before River
// refuses to start with its own message.
func TestQueueRescueAfterAtLeastJobTimeout(t *testing.T) {
	_, err := ParseFrom[Operator](map[string]string{
		"DATABASE_URL": "postgres://zeitwork@127.0.0.1/zeitwork", "MANAGEMENT_TOKEN": "m",
		"QUEUE_JOB_TIMEOUT": "5m", "QUEUE_RESCUE_AFTER": "1m",
	})
	var cerr *Error
	if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{"QUEUE_RESCUE_AFTER"}) {
		t.Fatalf("err = %v, want QUEUE_RESCUE_AFTER named", err)
	}
}

func TestURLPasswordNeverInErrors(t *testing.T) {
	_, err := ParseFrom[Migrate](map[string]string{"DATABASE_URL": "postgres://u:hunter2@/db"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v: want an error without the password", err)
	}
}

func TestDefaultsAndValues(t *testing.T) {
	cfg, err := ParseFrom[Operator](map[string]string{
		"DATABASE_URL":  "postgres://zeitwork:pw@127.0.0.1:5432/zeitwork",
		"LOG_FORMAT":    "text",
		"CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.MaxConns != 10 || cfg.Queue.RescueAfter != time.Minute || cfg.Queue.JobTimeout != time.Minute || cfg.Addr != "" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if cfg.Log.Format != zlog.FormatText || cfg.Log.Level != slog.LevelInfo {
		t.Fatalf("log config = %+v", cfg.Log)
	}
	if cfg.Database.URL.Reveal() != "postgres://zeitwork:pw@127.0.0.1:5432/zeitwork" {
		t.Fatalf("url = %q", cfg.Database.URL.Reveal())
	}
	if strings.Contains(cfg.Database.URL.String(), "pw@") {
		t.Fatalf("String() shows the password: %s", cfg.Database.URL)
	}
}

func TestEdgeTLSIsOnUnlessTurnedOff(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "ACME_EMAIL": "ops@example.com"}
	for _, tc := range []struct {
		vars map[string]string
		tls  bool
	}{
		{map[string]string{}, true},
		{map[string]string{"EDGE_HTTPS_ADDR": ""}, true}, // empty is unset: the default applies
		{map[string]string{"EDGE_HTTPS_ADDR": "off"}, false},
		{map[string]string{"EDGE_CLOUDFLARE_FRONTED": "true"}, false},
	} {
		vars := maps.Clone(base)
		maps.Copy(vars, tc.vars)
		cfg, err := ParseFrom[Edge](vars)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLS() != tc.tls {
			t.Errorf("%v: TLS() = %v", tc.vars, cfg.TLS())
		}
	}
	cfg, _ := ParseFrom[Edge](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "ACME_EMAIL": "ops@example.com", "EDGE_METRICS_ADDR": "off", "EDGE_TRUSTED_PROXIES": "10.0.0.0/8,fd00::/64"})
	if !Off(cfg.MetricsAddr) || len(cfg.TrustedProxies) != 2 || !cfg.TrustedProxies[1].Addr().Is6() {
		t.Fatalf("metrics %q, trusted %v", cfg.MetricsAddr, cfg.TrustedProxies)
	}
	if _, err := ParseFrom[Edge](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "EDGE_TRUSTED_PROXIES": "cloudflare"}); err == nil || !strings.Contains(err.Error(), "EDGE_TRUSTED_PROXIES") {
		t.Fatalf("bad trusted proxies: %v", err)
	}
}

// TestEdgeServingTLSNeedsAnACMEContact: without ACME_EMAIL certmagic
// registers its placeholder "default" as the account's contact on the
// second start, which ACME servers refuse, so an edge serving TLS does not
// start without a real address; an edge serving no TLS never asks for
// certificates and needs none.
func TestEdgeServingTLSNeedsAnACMEContact(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "NODE_PROXY_TOKEN": "p"}
	for _, tc := range []struct {
		vars map[string]string
		want string // a problem naming ACME_EMAIL, and this; empty: parses
	}{
		{map[string]string{}, "required"},
		{map[string]string{"ACME_EMAIL": "default"}, "not an email address"},
		{map[string]string{"ACME_EMAIL": "Ops <ops@example.com>"}, "not an email address"},
		{map[string]string{"ACME_EMAIL": "ops@example.com "}, "not an email address"},
		{map[string]string{"ACME_EMAIL": "ops@example.com"}, ""},
		{map[string]string{"EDGE_HTTPS_ADDR": "off"}, ""},
		{map[string]string{"EDGE_CLOUDFLARE_FRONTED": "true"}, ""},
	} {
		vars := maps.Clone(base)
		maps.Copy(vars, tc.vars)
		cfg, err := ParseFrom[Edge](vars)
		var cerr *Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.vars, err)
		case tc.want == "" && cfg.ACME.Email != tc.vars["ACME_EMAIL"]:
			t.Errorf("%v: email %q", tc.vars, cfg.ACME.Email)
		case tc.want != "" && (!errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{"ACME_EMAIL"}) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: err = %v, want a problem with ACME_EMAIL: %s", tc.vars, err, tc.want)
		}
	}
}

func TestSecretsKeysParseAtStart(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "NODE_INTERNAL_ADDRESS": "10.0.0.1:8090"}
	api, err := ParseFrom[API](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "EDGE_APPS_DOMAIN": "apps.test", "EDGE_APPS_URL": "http://apps.test:28082"})
	if err != nil || api.Platform.AppsURL != "http://apps.test:28082" {
		t.Fatalf("apps URL %q, %v", api.Platform.AppsURL, err)
	}
	cfg, err := ParseFrom[Operator](base)
	if err != nil || cfg.Secrets.Keys != nil {
		t.Fatalf("unset: ring %v, err %v", cfg.Secrets.Keys, err)
	}
	vars := maps.Clone(base)
	vars["SECRETS_KEYS"] = secret.NewKey("k2") + "," + secret.NewKey("k1")
	if cfg, err = ParseFrom[Operator](vars); err != nil || cfg.Secrets.Keys == nil || cfg.Secrets.Keys.Current() != "k2" {
		t.Fatalf("two keys: ring %v, err %v", cfg.Secrets.Keys, err)
	}
	vars["SECRETS_KEYS"] = "k1:c2hvcnQ=" // "short": not 32 bytes
	_, err = ParseFrom[Operator](vars)
	var cerr *Error
	if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{"SECRETS_KEYS"}) {
		t.Fatalf("bad key: %v", err)
	}
	if strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Fatalf("the key is in the error: %v", err)
	}
}

func TestRegistryTokenKeyParsesAtStartWithItsSecret(t *testing.T) {
	seed := base64.StdEncoding.EncodeToString(make([]byte, ed25519.SeedSize))
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m"}
	for _, tc := range []struct {
		name string
		vars map[string]string
		bad  string // the variable named, "" for none
	}{
		{"neither", map[string]string{}, ""},
		{"both", map[string]string{"REGISTRY_TOKEN_KEY": seed, "REGISTRY_CREDENTIAL_SECRET": "s"}, ""},
		{"key alone", map[string]string{"REGISTRY_TOKEN_KEY": seed}, "REGISTRY_TOKEN_KEY"},
		{"secret alone", map[string]string{"REGISTRY_CREDENTIAL_SECRET": "s"}, "REGISTRY_TOKEN_KEY"},
		{"not base64", map[string]string{"REGISTRY_TOKEN_KEY": "not-a-key!", "REGISTRY_CREDENTIAL_SECRET": "s"}, "REGISTRY_TOKEN_KEY"},
		{"short seed", map[string]string{"REGISTRY_TOKEN_KEY": "c2hvcnQ=", "REGISTRY_CREDENTIAL_SECRET": "s"}, "REGISTRY_TOKEN_KEY"},
	} {
		vars := maps.Clone(base)
		maps.Copy(vars, tc.vars)
		cfg, err := ParseFrom[Operator](vars)
		if tc.bad == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else if cfg.RegistryTokenKey.Set() != (tc.vars["REGISTRY_TOKEN_KEY"] != "") {
				t.Errorf("%s: key set = %v", tc.name, cfg.RegistryTokenKey.Set())
			}
			continue
		}
		var cerr *Error
		if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), []string{tc.bad}) {
			t.Errorf("%s: err = %v, want one naming %s", tc.name, err, tc.bad)
		}
	}
	cfg, _ := ParseFrom[Operator](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "REGISTRY_TOKEN_KEY": seed, "REGISTRY_CREDENTIAL_SECRET": "s"})
	if got := fmt.Sprint(cfg.RegistryTokenKey); strings.Contains(got, seed) || got != "[redacted]" {
		t.Fatalf("the key prints as %q", got)
	}
}

func TestRulesAcrossVariables(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parse func(map[string]string) error
		vars  map[string]string
		want  []string
	}{
		{"builder needs a registry", parse[Builder], map[string]string{"S3_ENDPOINT": "http://127.0.0.1:9000", "BUILDKIT_ADDR": "unix:///b.sock"}, []string{"REGISTRY_ADDR"}},
		{"S3 endpoint is a URL", parse[Builder], map[string]string{"S3_ENDPOINT": "127.0.0.1:9000", "BUILDKIT_ADDR": "unix:///b.sock", "REGISTRY_ADDR": "r"}, []string{"S3_ENDPOINT"}},
		{"plain HTTP to which registry", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "REGISTRY_INSECURE": "true"}, []string{"REGISTRY_INSECURE"}},
		{"domain checks need an interval", parse[Operator], map[string]string{"DOMAIN_CHECK_INTERVAL": "0s"}, []string{"DOMAIN_CHECK_INTERVAL"}},
		{"domain rechecks need an interval and a limit", parse[Operator], map[string]string{"DOMAIN_RECHECK_INTERVAL": "0s", "DOMAIN_RECHECK_FAILURES": "0"}, []string{"DOMAIN_RECHECK_FAILURES", "DOMAIN_RECHECK_INTERVAL"}},
		{"an edge loop spins briefly if at all", parse[Edge], map[string]string{"EDGE_LOOP_SPIN": "2ms"}, []string{"EDGE_LOOP_SPIN"}},
		{"an edge loop cannot spin backwards", parse[Edge], map[string]string{"EDGE_LOOP_SPIN": "-1us"}, []string{"EDGE_LOOP_SPIN"}},
		{"edge timeouts are never off", parse[Edge], map[string]string{"EDGE_READ_HEADER_TIMEOUT": "0s", "EDGE_IDLE_TIMEOUT": "0s"}, []string{"EDGE_IDLE_TIMEOUT", "EDGE_READ_HEADER_TIMEOUT"}},
		{"a dev prefix is a name", parse[Dev], map[string]string{"DEV_PREFIX": "Dev_1-", "S3_ENDPOINT": "http://h", "BUILDKIT_ADDR": "b"}, []string{"DEV_PREFIX"}},
		{"GitHub URLs are URLs", parse[API], map[string]string{"GITHUB_API_URL": "api.github.com", "GITHUB_WEB_URL": "ftp://github.com"}, []string{"GITHUB_API_URL", "GITHUB_WEB_URL"}},
		{"OAuth client id needs its secret", parse[API], map[string]string{"GITHUB_CLIENT_ID": "Iv1.abc"}, []string{"GITHUB_CLIENT_ID"}},
		{"builds never get the builder's own registry credentials", parse[Builder], map[string]string{"S3_ENDPOINT": "http://h", "BUILDKIT_ADDR": "b", "REGISTRY_ADDR": "r", "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"}, []string{"REGISTRY_USERNAME"}},
		{"build network is isolated or host", parse[Builder], map[string]string{"S3_ENDPOINT": "http://h", "BUILDKIT_ADDR": "b", "REGISTRY_ADDR": "r", "BUILD_NETWORK": "bridge"}, []string{"BUILD_NETWORK"}},
		{"App id needs its key", parse[Builder], map[string]string{"S3_ENDPOINT": "http://h", "BUILDKIT_ADDR": "b", "REGISTRY_ADDR": "r", "GITHUB_APP_ID": "42"}, []string{"GITHUB_APP_ID"}},
		{"apps URL is a URL of the apps domain", parse[API], map[string]string{"EDGE_APPS_URL": "http://other.test:8080"}, []string{"EDGE_APPS_URL"}},
		{"apps URL has no path", parse[API], map[string]string{"EDGE_APPS_DOMAIN": "apps.test", "EDGE_APPS_URL": "http://apps.test/x"}, []string{"EDGE_APPS_URL"}},
		{"egress is nat or off", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "NODE_EGRESS": "on"}, []string{"NODE_EGRESS"}},
		{"nat on a real node names its uplink", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "NODE_EGRESS": "nat"}, []string{"NETWORK_UPLINK"}},
		{"an uplink without egress is a mistake", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "NETWORK_UPLINK": "eth0"}, []string{"NETWORK_UPLINK"}},
		{"resolvers are addresses", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "NETWORK_RESOLVERS": "1.1.1.1,dns.google"}, []string{"NETWORK_RESOLVERS"}},
		// The edges hold the node-proxy token: it must not open node APIs.
		{"node-proxy token is not the node API's", parse[NodeAgent], map[string]string{"NODE_INTERNAL_ADDRESS": "a:1", "NODE_PROXY_TOKEN": "t"}, []string{"NODE_PROXY_TOKEN"}},
		// A variable that failed to parse is named once, not again by a rule.
		{"parse error and rule", parse[Builder], map[string]string{"S3_ENDPOINT": "http://h", "BUILDKIT_ADDR": "b", "REGISTRY_INSECURE": "maybe"}, []string{"REGISTRY_ADDR", "REGISTRY_INSECURE"}},
	} {
		vars := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "s", "ACME_EMAIL": "ops@example.com"}
		maps.Copy(vars, tc.vars)
		err := tc.parse(vars)
		var cerr *Error
		if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), tc.want) {
			t.Errorf("%s: err = %v, want vars %v", tc.name, err, tc.want)
		}
	}
	api, err := ParseFrom[API](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "EDGE_APPS_DOMAIN": "apps.test", "EDGE_APPS_URL": "http://apps.test:28082"})
	if err != nil || api.Platform.AppsURL != "http://apps.test:28082" {
		t.Fatalf("apps URL %q, %v", api.Platform.AppsURL, err)
	}
	cfg, err := ParseFrom[Operator](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "NODE_INTERNAL_ADDRESS": "a:1", "REGISTRY_INSECURE": "true", "REGISTRY_ADDR": "127.0.0.1:5000"})
	if err != nil || !slices.Equal(cfg.Registry.PlainHTTP(), []string{"127.0.0.1:5000"}) {
		t.Fatalf("plain HTTP registries %v, %v", cfg.Registry.PlainHTTP(), err)
	}
}

// TestEachCredentialBelongsToItsAPI: each internal API has its own token
// variable, and a role requires exactly the tokens of the APIs it serves or
// calls: the edge holds only the node-proxy's, the operator only the
// management API's, a node agent the node API's and the node-proxy's.
func TestEachCredentialBelongsToItsAPI(t *testing.T) {
	for _, tc := range []struct {
		role  string
		parse func(map[string]string) error
		want  []string
	}{
		{"api", parse[API], []string{"CLUSTER_TOKEN"}},
		{"operator", parse[Operator], []string{"MANAGEMENT_TOKEN"}},
		{"nodeagent", parse[NodeAgent], []string{"CLUSTER_TOKEN", "NODE_PROXY_TOKEN"}},
		{"edge", parse[Edge], []string{"NODE_PROXY_TOKEN"}},
	} {
		err := tc.parse(map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "NODE_INTERNAL_ADDRESS": "a:1", "ACME_EMAIL": "ops@example.com"})
		var cerr *Error
		if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), tc.want) {
			t.Errorf("%s without tokens: %v, want it to ask for %v", tc.role, err, tc.want)
		}
	}
	cfg, err := ParseFrom[NodeAgent](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "NODE_INTERNAL_ADDRESS": "a:1", "CLUSTER_TOKEN": "c", "NODE_PROXY_TOKEN": "p"})
	if err != nil || cfg.Cluster.Token.Reveal() != "c" || cfg.NodeProxy.Token.Reveal() != "p" {
		t.Fatalf("node agent tokens %v: %v", cfg, err)
	}
}

func parse[T any](vars map[string]string) error {
	_, err := ParseFrom[T](vars)
	return err
}

// TestEachVariableIsDeclaredOnce: a variable read by several roles comes
// from one struct field, so it cannot mean different things to them.
func TestEachVariableIsDeclaredOnce(t *testing.T) {
	where := map[string]string{} // variable → declaring type.field
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if name == "" && isNested(f.Type) {
				walk(f.Type)
				continue
			}
			if name == "" {
				continue
			}
			decl := typ.String() + "." + f.Name
			if prev, ok := where[name]; ok && prev != decl {
				t.Errorf("%s is declared by %s and by %s", name, prev, decl)
			}
			where[name] = decl
		}
	}
	for _, role := range []any{Migrate{}, API{}, Operator{}, NodeAgent{}, Builder{}, Edge{}, Dev{}} {
		walk(reflect.TypeOf(role))
	}
	if len(where) < 60 {
		t.Fatalf("only %d variables found: the walk misses some", len(where))
	}
}

func TestAPIRateLimitsAndDeviceLogin(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://z@127.0.0.1/z", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m"}
	cfg, err := ParseFrom[API](base)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.RateLimits; l.SignIn.String() != "30/1m0s" || l.Webhooks.Max != 1200 || l.TrustedProxies != nil ||
		cfg.DeviceLogin.TTL != 15*time.Minute || cfg.DeviceLogin.Interval != 5*time.Second {
		t.Fatalf("defaults: %+v %+v", cfg.RateLimits, cfg.DeviceLogin)
	}
	set := maps.Clone(base)
	set["API_RATE_LIMIT_TOKENS"], set["API_TRUSTED_PROXIES"] = "off", "10.0.0.0/8,fd00::/8"
	if cfg, err = ParseFrom[API](set); err != nil || !cfg.RateLimits.Tokens.Off() || len(cfg.RateLimits.TrustedProxies) != 2 {
		t.Fatalf("%+v, %v", cfg.RateLimits, err)
	}
	bad := maps.Clone(base)
	bad["API_RATE_LIMIT_SIGN_IN"], bad["API_TRUSTED_PROXIES"], bad["API_DEVICE_VERIFICATION_URL"], bad["API_DEVICE_POLL_INTERVAL"] = "lots", "10.0.0.1", "dashboard/device", "0s"
	_, err = ParseFrom[API](bad)
	var cerr *Error
	want := []string{"API_DEVICE_POLL_INTERVAL", "API_DEVICE_VERIFICATION_URL", "API_RATE_LIMIT_SIGN_IN", "API_TRUSTED_PROXIES"}
	if !errors.As(err, &cerr) || !slices.Equal(cerr.Vars(), want) {
		t.Fatalf("err = %v, want problems with %v", err, want)
	}
}

func TestEdgeDataPathIsTheLoopUnlessSet(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "ACME_EMAIL": "ops@example.com"}
	if cfg, err := ParseFrom[Edge](base); err != nil || cfg.DataPath != "loop" {
		t.Fatalf("default: %q, %v", cfg.DataPath, err)
	}
	if cfg, err := ParseFrom[Edge](with(base, "EDGE_DATA_PATH", "fast")); err != nil || cfg.DataPath != "fast" {
		t.Fatalf("fast: %q, %v", cfg.DataPath, err)
	}
	if cfg, err := ParseFrom[Edge](with(base, "EDGE_DATA_PATH", "stdlib")); err != nil || cfg.DataPath != "stdlib" {
		t.Fatalf("stdlib: %q, %v", cfg.DataPath, err)
	}
	if _, err := ParseFrom[Edge](with(base, "EDGE_DATA_PATH", "fasthttp")); err == nil || !strings.Contains(err.Error(), "EDGE_DATA_PATH") {
		t.Fatalf("unknown path: %v", err)
	}
}

func TestEdgeLoopsSpinBrieflyUnlessSetTo0(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "MANAGEMENT_TOKEN": "m", "ACME_EMAIL": "ops@example.com"}
	for _, c := range []struct {
		set  string // "": unset
		want time.Duration
	}{
		{"", 10 * time.Microsecond},
		{"0", 0},
		{"20us", 20 * time.Microsecond},
	} {
		env := base
		if c.set != "" {
			env = with(base, "EDGE_LOOP_SPIN", c.set)
		}
		if cfg, err := ParseFrom[Edge](env); err != nil || cfg.LoopSpin != c.want {
			t.Errorf("EDGE_LOOP_SPIN=%q: %s, %v; want %s", c.set, cfg.LoopSpin, err, c.want)
		}
	}
}

func with(m map[string]string, k, v string) map[string]string {
	m = maps.Clone(m)
	m[k] = v
	return m
}
