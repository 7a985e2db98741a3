package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/hostname"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/sdlisten"
)

// Certificates is the edge's TLS: certificates for the HTTPS listener and
// the ACME HTTP-01 challenge responder for the plain one (internal/certs).
type Certificates interface {
	TLSConfig() *tls.Config
	HTTPChallenge(next http.Handler) http.Handler
}

// Listeners are the sockets the edge serves; nil ones are not served.
type Listeners struct {
	HTTP, HTTPS, Metrics net.Listener
}

// NewCertificates makes the edge's Certificates on its database pool.
type NewCertificates func(ctx context.Context, pool *pgxpool.Pool) (Certificates, error)

// Main runs `zeitwork edge` until ctx ends: routes synced from the
// database, the proxy on HTTP (redirecting to HTTPS when the edge
// terminates TLS) and HTTPS, and metrics. newCerts is nil when the edge
// serves no TLS (Cloudflare-fronted, or EDGE_HTTPS_ADDR=off). Each
// listener is the socket systemd passed named http, https or metrics
// (LISTEN_FDS, internal/sdlisten) when there is one, else opened on its
// address.
func Main(ctx context.Context, cfg config.Edge, pool *pgxpool.Pool, newCerts NewCertificates, log *slog.Logger) error {
	// Sockets systemd holds (bootstrap's zeitwork-edge*.socket) outlive
	// this process: during a restart, connections wait in their backlog
	// for the next one instead of being refused.
	inherited, err := sdlisten.Inherit(log)
	if err != nil {
		return err
	}
	defer inherited.Close(ctx)
	var certs Certificates
	if newCerts != nil {
		if certs, err = newCerts(ctx, pool); err != nil {
			return fmt.Errorf("certificates: %w", err)
		}
	}
	var ls Listeners
	defer func() {
		for _, l := range []net.Listener{ls.HTTP, ls.HTTPS, ls.Metrics} {
			if l != nil {
				l.Close()
			}
		}
	}()
	listen := func(setting, addr, name string) (net.Listener, error) {
		if config.Off(addr) && !inherited.Has(name) {
			return nil, nil
		}
		return inherited.Listen(ctx, name, setting, addr)
	}
	if ls.HTTP, err = listen("EDGE_HTTP_ADDR", cfg.HTTPAddr, "http"); err != nil {
		return err
	}
	if certs != nil {
		if ls.HTTPS, err = listen("EDGE_HTTPS_ADDR", cfg.HTTPSAddr, "https"); err != nil {
			return err
		}
	}
	if ls.Metrics, err = listen("EDGE_METRICS_ADDR", cfg.MetricsAddr, "metrics"); err != nil {
		return err
	}
	return Serve(ctx, cfg, pool, certs, ls, log)
}

// Serve is Main on listeners the caller opened.
func Serve(ctx context.Context, cfg config.Edge, pool *pgxpool.Pool, certs Certificates, ls Listeners, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := NewMetrics(reg)
	routes := &Routes{}
	syncer := &Syncer{Pool: pool, Routes: routes, AppsDomain: cfg.Platform.AppsDomain, SnapshotPath: cfg.SnapshotPath, PollInterval: cfg.PollInterval, Metrics: metrics, Log: log}
	if err := syncer.Restore(); err != nil {
		log.WarnContext(ctx, "route snapshot not restored", "err", err)
	}
	var trust func(netip.Addr) bool
	if cfg.CloudflareFronted {
		trust = func(a netip.Addr) bool {
			for _, p := range cfg.TrustedProxies {
				if p.Contains(a) {
					return true
				}
			}
			return false
		}
	}
	proxy := NewProxy(ProxyConfig{Routes: routes, Token: cfg.NodeProxy.Token.Reveal(), UpstreamTimeout: cfg.UpstreamTimeout, TrustForwarded: trust, Metrics: metrics, Log: log, LoopSpin: cfg.LoopSpin})

	// What net/http serves: on the fast and loop data paths, HTTP/2 and the
	// connections they hand over, forwarded by the direct exchange where it
	// can (direct.go); on the stdlib path, everything, by ReverseProxy.
	var handler http.Handler = proxy
	if cfg.DataPath == DataPathFast || cfg.DataPath == DataPathLoop {
		handler = proxy.Direct()
	}
	// Plain HTTP: the proxy itself when nothing terminates TLS here (or
	// Cloudflare did), else a redirect to HTTPS; ACME challenges first.
	plain := handler
	if ls.HTTPS != nil && certs != nil {
		plain = redirect(routes, proxy)
	}
	if certs != nil {
		plain = certs.HTTPChallenge(plain)
	}
	server := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    64 << 10, // larger header blocks get 431
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	var graceful httpapi.Graceful
	g, gctx := errgroup.WithContext(ctx)
	serve := func(l net.Listener, srv *http.Server, tlsCfg *tls.Config) {
		if l == nil {
			return
		}
		g.Go(func() error {
			if tlsCfg != nil {
				srv.TLSConfig = tlsCfg
				return graceful.Serve(srv, l, func(l net.Listener) error { return srv.ServeTLS(l, "", "") })
			}
			return graceful.Serve(srv, l, srv.Serve)
		})
	}
	// The fast data path takes the plain listener when it carries the
	// proxy itself (no redirect to HTTPS, no ACME challenges to answer),
	// and HTTP/1.1 over TLS: on the event loops after the handshake on
	// the loop path, on goroutines on the fast path.
	var fast, fastTLS *FastListener
	if ls.HTTP != nil && certs == nil {
		switch cfg.DataPath {
		case DataPathFast:
			fast = proxy.FastListener(ls.HTTP, cfg.ReadHeaderTimeout, cfg.IdleTimeout)
		case DataPathLoop:
			fast = proxy.LoopListener(ls.HTTP, cfg.ReadHeaderTimeout, cfg.IdleTimeout)
		}
		if fast != nil {
			ls.HTTP = fast
		}
	}
	serve(ls.HTTP, server(plain), nil)
	if ls.HTTPS != nil && certs != nil {
		switch cfg.DataPath {
		case DataPathFast, DataPathLoop:
			if cfg.DataPath == DataPathLoop {
				fastTLS = proxy.LoopTLSListener(ls.HTTPS, certs.TLSConfig(), handler, cfg.ReadHeaderTimeout, cfg.IdleTimeout)
			} else {
				fastTLS = proxy.FastTLSListener(ls.HTTPS, certs.TLSConfig(), handler, cfg.ReadHeaderTimeout, cfg.IdleTimeout)
			}
			ls.HTTPS = fastTLS
			srv := server(handler)
			KeepTLSState(srv)
			serve(fastTLS, srv, nil)
		default:
			serve(ls.HTTPS, server(proxy), certs.TLSConfig())
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	serve(ls.Metrics, server(mux), nil)
	g.Go(func() error { return ignoreCanceled(syncer.Run(gctx)) })
	g.Go(func() error {
		<-gctx.Done()
		// Answer what clients sent, then go: a rolling edge restart drops
		// nothing (and refuses nothing when systemd holds the sockets).
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 25*time.Second)
		defer cancel()
		_ = graceful.Shutdown(sctx)
		for _, fl := range []*FastListener{fast, fastTLS} {
			if fl != nil {
				fl.Shutdown(sctx.Done())
			}
		}
		return nil
	})
	addr := func(l net.Listener) string {
		if l == nil {
			return ""
		}
		return l.Addr().String()
	}
	log.InfoContext(ctx, "edge running", "http", addr(ls.HTTP), "https", addr(ls.HTTPS), "metrics", addr(ls.Metrics),
		"apps_domain", cfg.Platform.AppsDomain, "cloudflare_fronted", cfg.CloudflareFronted, "data_path", DataPathOf(fast), "https_data_path", DataPathOf(fastTLS))
	return ignoreCanceled(g.Wait())
}

// DataPathOf is the data path a listener from FastListener or
// LoopListener runs (nil: the stdlib path).
func DataPathOf(fast *FastListener) string {
	switch {
	case fast == nil:
		return DataPathStdlib
	case fast.loops != nil:
		return DataPathLoop
	}
	return DataPathFast
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// redirect sends clients of a routed host to HTTPS (308 keeps the method
// and body); an unknown host gets the 404 page here rather than a redirect
// to a name the edge has no certificate for.
func redirect(routes *Routes, proxy *Proxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, err := hostname.Normalize(r.Host)
		if _, ok := routes.Load().Lookup(r.Host); !ok || err != nil {
			proxy.ServeHTTP(w, r) // the proxy's own 404
			return
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
