package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mholt/acmez/v3"

	"github.com/zeitwork/zeitwork/internal/cloudflare"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Why a name gets no certificate on demand.
var (
	ErrNotVerified    = errors.New("not a verified custom domain")
	ErrUnknownName    = fmt.Errorf("%w: no project has added it", ErrNotVerified)
	ErrPlatformDomain = errors.New("a platform domain name: only its wildcard certificate serves it")
)

// Decision says whether a custom domain may have a certificate obtained on
// demand: nil if so, else why not.
type Decision func(ctx context.Context, name string) error

// Options are the parts of a Manager that come from the edge rather than
// from config.ACME.
type Options struct {
	// Allow decides on custom domains; nil is VerifiedDomains(pool). Names
	// in the platform domains are refused before Allow is asked.
	Allow Decision
	// HTTPAddr and HTTPSAddr are where the edge serves HTTPChallenge and
	// TLSConfig (EDGE_HTTP_ADDR, EDGE_HTTPS_ADDR). The CA validates
	// custom domains there, by HTTP-01 and TLS-ALPN-01; an empty one turns
	// its challenge off. certmagic only checks that something listens
	// there, and would listen itself if nothing did.
	HTTPAddr, HTTPSAddr string
	// PlatformDomains get wildcard certificates (*.d and d) by DNS-01
	// (EDGE_PLATFORM_DOMAINS).
	PlatformDomains []string
	// Keys seal what is stored (CERTIFICATE_KEYS); nil: stored as it is.
	Keys *secret.Ring
	// Limits bound how often Allow is asked; zero values take the
	// defaults.
	Limits DecisionLimits
}

// Manager obtains, renews and serves the edge's certificates: one
// certmagic configuration for the platform domains' wildcards (DNS-01),
// one for custom domains on demand (HTTP-01, TLS-ALPN-01), both on the
// same Postgres storage and in-memory cache.
type Manager struct {
	log      *slog.Logger
	platform []string // lower case, without a trailing dot
	allow    *limitedDecision
	storage  *Storage

	cache    *certmagic.Cache
	wildcard *certmagic.Config
	onDemand *certmagic.Config
	custom   *certmagic.ACMEIssuer // solves HTTP-01 for onDemand
	dns01    bool                  // wildcards can be obtained

	mu     sync.Mutex
	cancel context.CancelFunc // of Start's management
	closed bool
}

// New returns a Manager on pool. It requests nothing until a handshake
// needs a custom domain's certificate, or Start.
func New(cfg config.ACME, pool *pgxpool.Pool, log *slog.Logger, opts Options) (*Manager, error) {
	if cfg.Directory == "" {
		return nil, errors.New("ACME_DIRECTORY: empty")
	}
	var roots *x509.CertPool
	if cfg.CARoots != "" {
		pem, err := os.ReadFile(cfg.CARoots)
		if err != nil {
			return nil, fmt.Errorf("ACME_CA_ROOTS: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ACME_CA_ROOTS: no PEM certificate in %s", cfg.CARoots)
		}
	}
	httpHost, httpPort, err := splitAddr(opts.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP address: %w", err)
	}
	tlsHost, tlsPort, err := splitAddr(opts.HTTPSAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTPS address: %w", err)
	}
	if httpPort == 0 && tlsPort == 0 {
		return nil, errors.New("neither an HTTP nor an HTTPS address: custom domains could not be validated")
	}
	listenHost := httpHost
	if httpPort == 0 {
		listenHost = tlsHost
	}

	m := &Manager{log: log, storage: NewStorage(pool, opts.Keys, log)}
	allow := opts.Allow
	if allow == nil {
		allow = VerifiedDomains(pool)
	}
	m.allow = newLimitedDecision(allow, opts.Limits)
	for _, d := range opts.PlatformDomains {
		if d = normalize(d); d != "" {
			m.platform = append(m.platform, d)
		}
	}
	zl := zapToSlog(log)
	events := certmagic.Config{Storage: m.storage, Logger: zl, OnEvent: m.onEvent,
		ShouldEmitFunc: func(event string) bool { return event == "cert_obtained" }}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{GetConfigForCert: m.configFor, Logger: zl})

	issuer := func(c *certmagic.Config, t certmagic.ACMEIssuer) *certmagic.ACMEIssuer {
		t.CA, t.Email, t.Agreed, t.TrustedRoots, t.Logger = cfg.Directory, cfg.Email, true, roots, zl
		return certmagic.NewACMEIssuer(c, t)
	}

	onDemand := events
	onDemand.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.decide}
	m.onDemand = certmagic.New(m.cache, onDemand)
	m.custom = issuer(m.onDemand, certmagic.ACMEIssuer{
		DisableHTTPChallenge:    httpPort == 0,
		DisableTLSALPNChallenge: tlsPort == 0,
		ListenHost:              listenHost,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          tlsPort,
	})
	m.onDemand.Issuers = []certmagic.Issuer{m.custom}

	m.wildcard = certmagic.New(m.cache, events)
	// Without a token the issuer could solve no challenge, and Start
	// manages no wildcard.
	wt := certmagic.ACMEIssuer{DisableHTTPChallenge: true, DisableTLSALPNChallenge: true}
	if cfg.CloudflareToken.Reveal() != "" {
		m.dns01 = true
		provider := cloudflare.NewProvider(cfg.CloudflareAPI, cfg.CloudflareToken)
		wt.DNS01Solver = newDNS01Solver(provider, cfg.Resolvers, log)
	}
	m.wildcard.Issuers = []certmagic.Issuer{issuer(m.wildcard, wt)}
	return m, nil
}

// Start manages the platform domains' certificates (*.d and d for each)
// in the background: loads them from Postgres, obtains what is missing by
// DNS-01, renews them, until ctx ends or Close. Without a Cloudflare token
// it does nothing. Failures are logged and retried with backoff.
func (m *Manager) Start(ctx context.Context) error {
	if !m.dns01 || len(m.platform) == 0 {
		m.log.InfoContext(ctx, "no wildcard certificates managed: no Cloudflare token or no platform domains")
		return nil
	}
	names := make([]string, 0, 2*len(m.platform))
	for _, d := range m.platform {
		names = append(names, "*."+d, d)
	}
	m.preload(ctx, names)
	ctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil || m.closed {
		cancel()
		return errors.New("certificates: already started, or closed")
	}
	m.cancel = cancel
	go m.manageWildcards(ctx, names)
	return nil
}

// preloadTimeout bounds Start's load of the stored platform certificates.
const preloadTimeout = 10 * time.Second

// preload loads the platform certificates Postgres already holds into
// memory before Start returns. An edge restarted on a socket that systemd
// holds is handed the connections that waited in its backlog at once; a
// handshake for a platform name before its certificate is loaded would
// fail ("tls: internal error"). What is not stored yet, or cannot be
// loaded in time, is left to manageWildcards.
func (m *Manager) preload(ctx context.Context, names []string) {
	ctx, cancel := context.WithTimeout(ctx, preloadTimeout)
	defer cancel()
	for _, n := range names {
		if _, err := m.wildcard.CacheManagedCertificate(ctx, n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log.WarnContext(ctx, "stored wildcard certificate not loaded at start", "name", n, "err", err)
		}
	}
}

// manageWildcards hands names to certmagic once Postgres answers, then
// keeps loading any of them that this replica lacks in memory but Postgres
// has. certmagic loads a name from storage once, when it starts managing
// it, and gives up on the name if that load fails for any reason but
// absence: a replica started while Postgres was away would otherwise serve
// no wildcard until it restarted.
func (m *Manager) manageWildcards(ctx context.Context, names []string) {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		_, err := m.storage.Stat(ctx, "certificates")
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			break
		}
		m.log.WarnContext(ctx, "certificate storage unavailable: wildcard certificates wait for it", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	if err := m.wildcard.ManageAsync(ctx, names); err != nil {
		m.log.ErrorContext(ctx, "wildcard certificates not managed", "names", names, "err", err)
	}
	m.log.InfoContext(ctx, "managing wildcard certificates", "names", names)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, n := range names {
			if m.inMemory(n) {
				continue
			}
			// Loading never orders: a name not in storage yet is still
			// being obtained by certmagic, here or on another replica.
			if _, err := m.wildcard.CacheManagedCertificate(ctx, n); err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.log.WarnContext(ctx, "wildcard certificate not loaded", "name", n, "err", err)
			}
		}
	}
}

// inMemory reports whether the cache holds a certificate for
// exactly name.
func (m *Manager) inMemory(name string) bool {
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if slices.Contains(c.Names, name) {
			return true
		}
	}
	return false
}

// Close stops obtaining and renewing certificates.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	if m.cancel != nil {
		m.cancel()
	}
	m.cache.Stop()
}

// TLSConfig is the configuration of the HTTPS listener: certificates by
// SNI, and the ACME TLS-ALPN-01 challenge (protocol acme-tls/1).
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.getCertificate,
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		MinVersion:     tls.VersionTLS12,
	}
}

// HTTPChallenge answers ACME HTTP-01 challenges (/.well-known/acme-challenge/)
// started by any edge replica, and passes every other request to next.
//
// Challenges started elsewhere are looked up in storage (the database), so
// a challenge request is answered only for a name the decision allows:
// requests with random hosts are then bounded by the decision's limits.
// The CA only validates names an edge ordered, which the decision allowed.
func (m *Manager) HTTPChallenge(next http.Handler) http.Handler {
	solve := m.custom.HTTPChallengeHandler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if certmagic.LooksLikeHTTPChallenge(r) {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if m.decide(r.Context(), host) != nil {
				next.ServeHTTP(w, r)
				return
			}
		}
		solve.ServeHTTP(w, r)
	})
}

// getCertificate picks the configuration by name: a platform name is only
// ever served its wildcard (or apex) certificate, never one on demand.
//
// A TLS-ALPN-01 challenge handshake (acme-tls/1 alone) makes certmagic look
// the challenge up in storage before any decision, so it is decided here
// first: platform names are validated by DNS-01 only, and a custom name
// must pass the (limited) decision.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		if err := m.decide(hello.Context(), hello.ServerName); err != nil {
			return nil, fmt.Errorf("no TLS-ALPN challenge for %s: %w", hello.ServerName, err)
		}
	}
	if m.isPlatform(hello.ServerName) {
		return m.wildcard.GetCertificate(hello)
	}
	return m.onDemand.GetCertificate(hello)
}

// decide is the on-demand decision: certmagic asks it before it loads a
// certificate from storage or orders one, and before a renewal.
func (m *Manager) decide(ctx context.Context, name string) error {
	err := func() error {
		if m.isPlatform(name) {
			return fmt.Errorf("%s: %w", name, ErrPlatformDomain)
		}
		if net.ParseIP(name) != nil {
			return fmt.Errorf("%s: an IP address: %w", name, ErrNotVerified)
		}
		return m.allow.decide(ctx, name)
	}()
	if err != nil {
		// Anyone can send any SNI, so a refusal is routine.
		m.log.DebugContext(ctx, "no certificate on demand", "server_name", name, "reason", err)
	}
	return err
}

// onEvent logs each certificate obtained; certmagic logs failures itself.
func (m *Manager) onEvent(ctx context.Context, event string, data map[string]any) error {
	if event == "cert_obtained" {
		m.log.InfoContext(ctx, "certificate obtained", "identifier", data["identifier"], "renewal", data["renewal"], "issuer", data["issuer"])
	}
	return nil
}

// configFor is the cache's way back from a certificate to the
// configuration that renews it.
func (m *Manager) configFor(c certmagic.Certificate) (*certmagic.Config, error) {
	for _, n := range c.Names {
		if m.isPlatform(n) {
			return m.wildcard, nil
		}
	}
	return m.onDemand, nil
}

// isPlatform reports whether name is a platform domain, a name below one,
// or a wildcard of one.
func (m *Manager) isPlatform(name string) bool {
	n := strings.TrimPrefix(normalize(name), "*.")
	for _, d := range m.platform {
		if n == d || strings.HasSuffix(n, "."+d) {
			return true
		}
	}
	return false
}

func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
}

// splitAddr splits host:port; "" is no address (port 0).
func splitAddr(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, nil
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s: bad port", addr)
	}
	return host, port, nil
}
