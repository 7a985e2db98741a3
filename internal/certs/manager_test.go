package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/cloudflare"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// edgeEnv is what an edge replica's TLS runs against in these tests: a
// database with a project, a DNS server, and Pebble resolving through it.
type edgeEnv struct {
	pool    *pgxpool.Pool
	dns     *dnstest.Server
	ca      *pebbleCA
	project uuid.UUID
	log     *slog.Logger
}

func newEnv(t *testing.T) *edgeEnv {
	t.Helper()
	e := &edgeEnv{pool: testdb.New(t), dns: dnstest.Start(t)}
	e.ca = startPebble(t, e.dns.Addr)
	e.project = testdb.Project(t, e.pool)
	logs := &testenv.Buffer{}
	e.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", logs.String())
		}
	})
	return e
}

// config is the edge's ACME configuration, pointed at Pebble; no
// Cloudflare token, so no wildcards.
func (e *edgeEnv) config() config.ACME {
	return config.ACME{
		// Always an address: without one certmagic reuses the placeholder
		// of an account it stored, "default", which Pebble refuses.
		Email:     "ops@zeitwork.test",
		Directory: e.ca.Directory,
		CARoots:   e.ca.CARoots,
		Resolvers: []string{e.dns.Addr},
	}
}

// manager is one edge replica's Manager on the shared database, with
// zeitwork.test as its platform domain.
func (e *edgeEnv) manager(t *testing.T, cfg config.ACME) *Manager {
	t.Helper()
	m, err := New(cfg, e.pool, e.log, Options{HTTPAddr: e.ca.HTTP.Addr().String(), HTTPSAddr: e.ca.TLS.Addr().String(), PlatformDomains: []string{"zeitwork.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// domain adds a custom domain to the project, verified or still pending,
// and points its name at the edge (loopback), as its owner's CNAME would.
func (e *edgeEnv) domain(t *testing.T, name string, verified bool) db.Domain {
	t.Helper()
	ctx := context.Background()
	q := db.New(e.pool)
	d, err := q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: e.project, Name: name, VerificationToken: "token-" + name})
	if err != nil {
		t.Fatal(err)
	}
	if verified {
		if d, err = q.DomainSetVerified(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	e.dns.SetA(name, net.IPv4(127, 0, 0, 1))
	return d
}

// storedNames returns the names the Postgres storage holds certificates for.
func (e *edgeEnv) storedNames(t *testing.T) []string {
	t.Helper()
	keys, err := NewStorage(e.pool, nil, e.log).List(context.Background(), "certificates", true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range keys {
		if strings.HasSuffix(k, ".crt") {
			parts := strings.Split(k, "/")
			names = append(names, parts[len(parts)-2])
		}
	}
	return names
}

func TestVerifiedDomainGetsCertificateOnDemand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.domain(t, "app.customer.test", true)
	m := e.manager(t, e.config())
	serve(t, m, e.ca.HTTP, e.ca.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	leaf, err := handshake(ctx, e.ca.TLS.Addr().String(), "app.customer.test", e.ca.Roots)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"app.customer.test"}) {
		t.Fatalf("served a certificate for %q", leaf.DNSNames)
	}
	if got := e.ca.Orders(); len(got) != 1 || !slices.Equal(got[0], []string{"app.customer.test"}) {
		t.Fatalf("orders: %q, want one for app.customer.test", got)
	}
	if got := e.storedNames(t); !slices.Equal(got, []string{"app.customer.test"}) {
		t.Fatalf("certificates in Postgres: %q", got)
	}

	// Another edge replica on the same database serves the same
	// certificate, and the CA is not asked again.
	m2 := e.manager(t, e.config())
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, m2, nil, l2)
	leaf2, err := handshake(ctx, l2.Addr().String(), "app.customer.test", e.ca.Roots)
	if err != nil {
		t.Fatalf("handshake with the second replica: %v", err)
	}
	if !leaf2.Equal(leaf) {
		t.Fatalf("second replica served serial %s, first %s", leaf2.SerialNumber, leaf.SerialNumber)
	}
	if got := e.ca.Orders(); len(got) != 1 {
		t.Fatalf("orders after the second replica: %q", got)
	}

	// Plain HTTP that is not a challenge goes to the edge's own handler.
	resp, err := http.Get("http://" + e.ca.HTTP.Addr().String() + "/.well-known/acme-challenge/unknown-token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown challenge token: HTTP %d, want the next handler's 404", resp.StatusCode)
	}
}

func TestNoCertificateForUnverifiedOrUnknownNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pending := e.domain(t, "pending.customer.test", false)
	for _, n := range []string{"unknown.customer.test", "zeitwork.test", "app.zeitwork.test"} {
		e.dns.SetA(n, net.IPv4(127, 0, 0, 1))
	}
	m := e.manager(t, e.config())
	serve(t, m, e.ca.HTTP, e.ca.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A pending domain, a name nobody added, and platform names (which
	// only a wildcard may serve, and this edge has no Cloudflare token).
	for _, name := range []string{"pending.customer.test", "unknown.customer.test", "zeitwork.test", "app.zeitwork.test"} {
		if leaf, err := handshake(ctx, e.ca.TLS.Addr().String(), name, e.ca.Roots); err == nil {
			t.Errorf("%s: served a certificate for %q", name, leaf.DNSNames)
		}
	}
	if got := e.ca.Orders(); len(got) != 0 {
		t.Fatalf("the CA was asked for %q", got)
	}
	if got := e.storedNames(t); len(got) != 0 {
		t.Fatalf("certificates in Postgres: %q", got)
	}

	// It was the verification that was missing: once verified, the same
	// name gets its certificate.
	if _, err := db.New(e.pool).DomainSetVerified(ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	leaf, err := handshake(ctx, e.ca.TLS.Addr().String(), "pending.customer.test", e.ca.Roots)
	if err != nil {
		t.Fatalf("handshake once verified: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"pending.customer.test"}) {
		t.Fatalf("served a certificate for %q", leaf.DNSNames)
	}
	if got := e.ca.Orders(); len(got) != 1 || !slices.Equal(got[0], []string{"pending.customer.test"}) {
		t.Fatalf("orders: %q", got)
	}
}

func TestPlatformWildcardByDNS01(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cf := cloudflare.NewEmulator("cf-token", e.dns)
	cf.AddZone("zeitwork.test")
	api := httptest.NewServer(cf)
	t.Cleanup(api.Close)
	cfg := e.config()
	cfg.CloudflareToken = "cf-token"
	cfg.CloudflareAPI = api.URL + "/client/v4"
	m := e.manager(t, cfg)
	serve(t, m, e.ca.HTTP, e.ca.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// Start obtains in the background: wait until the handshakes succeed.
	served := func(name string) *x509.Certificate {
		t.Helper()
		for {
			leaf, err := handshake(ctx, e.ca.TLS.Addr().String(), name, e.ca.Roots)
			if err == nil {
				return leaf
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: no certificate: %v", name, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	wild := served("myapp.zeitwork.test")
	if !slices.Equal(wild.DNSNames, []string{"*.zeitwork.test"}) {
		t.Fatalf("myapp.zeitwork.test served %q, want the wildcard", wild.DNSNames)
	}
	if apex := served("zeitwork.test"); !slices.Equal(apex.DNSNames, []string{"zeitwork.test"}) {
		t.Fatalf("zeitwork.test served %q", apex.DNSNames)
	}
	if other := served("other.zeitwork.test"); !other.Equal(wild) {
		t.Fatal("another name under the platform domain got another certificate")
	}

	got := e.ca.Orders()
	slices.SortFunc(got, func(a, b []string) int { return strings.Compare(strings.Join(a, ","), strings.Join(b, ",")) })
	if want := [][]string{{"*.zeitwork.test"}, {"zeitwork.test"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("orders: %q, want %q", got, want)
	}
	if left := cf.TXT("_acme-challenge.zeitwork.test"); len(left) != 0 {
		t.Fatalf("challenge records left in the zone: %q", left)
	}

	// A restarted replica serves the stored certificates from its first
	// handshake on: systemd hands it the connections that waited while it
	// restarted as soon as it serves.
	restarted := e.manager(t, cfg)
	tlsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, restarted, nil, tlsL)
	if err := restarted.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"myapp.zeitwork.test", "zeitwork.test"} {
		if _, err := handshake(ctx, tlsL.Addr().String(), name, e.ca.Roots); err != nil {
			t.Fatalf("%s, first handshake with a restarted replica: %v", name, err)
		}
	}
}

// Names in the platform domains are refused on demand whatever Allow says,
// and only they are.
func TestDecision(t *testing.T) {
	allowed := []string{}
	m, err := New(config.ACME{Directory: "https://ca.invalid/dir"},
		nil, zlog.Discard(), Options{HTTPAddr: ":80", PlatformDomains: []string{"Zeitwork.App", "zeitwork.com."}, Allow: func(_ context.Context, name string) error {
			allowed = append(allowed, name)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for _, name := range []string{"zeitwork.app", "x.zeitwork.app", "*.zeitwork.app", "A.B.ZEITWORK.COM."} {
		if err := m.decide(ctx, name); !errors.Is(err, ErrPlatformDomain) {
			t.Errorf("decide(%q) = %v, want ErrPlatformDomain", name, err)
		}
	}
	if err := m.decide(ctx, "127.0.0.1"); !errors.Is(err, ErrNotVerified) {
		t.Errorf("decide(IP) = %v, want ErrNotVerified", err)
	}
	for _, name := range []string{"notzeitwork.app", "zeitwork.app.customer.test", "shop.customer.test"} {
		if err := m.decide(ctx, name); err != nil {
			t.Errorf("decide(%q) = %v, want Allow's answer", name, err)
		}
	}
	if want := []string{"notzeitwork.app", "zeitwork.app.customer.test", "shop.customer.test"}; !slices.Equal(allowed, want) {
		t.Errorf("Allow was asked about %q, want %q", allowed, want)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for name, c := range map[string]struct {
		cfg  config.ACME
		opts Options
		want string
	}{
		"no directory":     {config.ACME{}, Options{HTTPAddr: ":80"}, "ACME_DIRECTORY"},
		"no listener":      {config.ACME{Directory: "https://ca.invalid/dir"}, Options{}, "neither"},
		"bad address":      {config.ACME{Directory: "https://ca.invalid/dir"}, Options{HTTPAddr: "80"}, "HTTP address"},
		"missing CA roots": {config.ACME{Directory: "https://ca.invalid/dir", CARoots: missing}, Options{HTTPAddr: ":80"}, "ACME_CA_ROOTS"},
		"CA roots not PEM": {config.ACME{Directory: "https://ca.invalid/dir", CARoots: notPEM}, Options{HTTPAddr: ":80"}, "no PEM certificate"},
	} {
		m, err := New(c.cfg, nil, zlog.Discard(), c.opts)
		if err == nil {
			m.Close()
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to mention %q", name, err, c.want)
		}
	}
}
