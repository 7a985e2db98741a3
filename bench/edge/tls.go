package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// The HTTPS comparison: the same backend behind the edge terminating TLS
// (its own HTTP/1.1 path over TLS, on the event loops and on goroutines,
// and net/http's) and behind nginx with
// ssl on, with one certificate for all of them, wrk speaking HTTP/1.1 over
// TLS with keep-alive. The handshake is paid once per connection; the
// records of every request are what differs.
//
// And over HTTP/2, what browsers speak: h2load, one stream at a time on
// each of as many connections as wrk opens, against the edge (its own
// HTTP/2 server: its frames read on the event loops with loop, on a
// goroutine per connection with fast; net/http's on stdlib) and nginx
// with http2 on.
const (
	edgeLoopTLS      = "edge (loop, TLS)"
	edgeFastTLS      = "edge (fast, TLS)"
	edgeStdlibTLS    = "edge (stdlib, TLS)"
	nginxTLS         = "nginx (TLS)"
	nginxHeadersTLS  = "nginx (TLS, edge's fields)"
	edgeH2           = "edge (HTTP/2)"
	edgeFastH2       = "edge (fast, HTTP/2)"
	edgeStdlibH2     = "edge (stdlib, HTTP/2)"
	nginxH2          = "nginx (HTTP/2)"
	nginxHeadersH2   = "nginx (HTTP/2, edge's fields)"
	benchACMEContact = "bench@example.com"
)

// certPair is a certificate and its key, PEM files.
type certPair struct{ cert, key string }

// writeCert writes a self-signed ECDSA P-256 certificate for the apps
// domain's names (what a platform wildcard is) into dir.
func writeCert(dir string) (certPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certPair{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "*." + appsDomain},
		DNSNames: []string{"*." + appsDomain, appsDomain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return certPair{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return certPair{}, err
	}
	c := certPair{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(c.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return certPair{}, err
	}
	if err := os.WriteFile(c.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return certPair{}, err
	}
	return c, nil
}

// startEdgeTLS runs `zeitwork edge` (built with -tags edgepprof, which
// reads EDGE_BENCH_TLS_CERT/KEY) terminating TLS with the certificate, and
// returns the address of its HTTPS listener.
// A pprof address is passed when pprof is not empty.
func startEdgeTLS(bin, dbURL, snapshot, dataPath string, c certPair, pprof string) (*proc, string, error) {
	https, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	env := []string{"EDGE_HTTPS_ADDR=" + https, "EDGE_BENCH_TLS_CERT=" + c.cert, "EDGE_BENCH_TLS_KEY=" + c.key, "ACME_EMAIL=" + benchACMEContact}
	if pprof != "" {
		env = append(env, "EDGE_PPROF_ADDR="+pprof)
	}
	p, _, _, err := startEdgeEnv(bin, dbURL, snapshot, dataPath, env...)
	return p, https, err
}

// tlsComparison is one comparison over TLS: the proxies in report order
// (the reference last), their rounds, and the cipher each negotiated
// (HTTP/2 only: h2load says).
type tlsComparison struct {
	names    []string
	load     load
	ciphers  map[string]string
	profiles map[string]string // "pprof <proxy>" → pprof -top of the edge under load (-profile only)
}

// compareTLS starts the HTTPS proxies (HTTP/1.1, or HTTP/2 if h2), runs the
// same rounds as the plain comparison against them, and stops them.
func compareTLS(ctx context.Context, o options, work, dbURL, host string, addrs []string, backend *proc, h2 bool) (tlsComparison, error) {
	var cmp tlsComparison
	dir := filepath.Join(work, "tls")
	if h2 {
		dir = filepath.Join(work, "h2")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return cmp, err
	}
	c, err := writeCert(dir)
	if err != nil {
		return cmp, fmt.Errorf("certificate: %w", err)
	}
	var proxies []proxy
	defer func() {
		for _, px := range proxies {
			px.p.stop()
		}
	}()
	// fast (a goroutine per connection, crypto/tls's records) beside loop
	// (the event loops, the edge's own records): over HTTP/1.1 they run
	// the exchange, over HTTP/2 they read the frames.
	edges := []struct{ name, path string }{{edgeStdlibTLS, "stdlib"}, {edgeFastTLS, "fast"}, {edgeLoopTLS, "loop"}}
	nginxes := []struct {
		name    string
		headers []string
	}{{nginxHeadersTLS, edgeHeaders}, {nginxTLS, nil}}
	if h2 {
		edges[0].name, edges[1].name, edges[2].name = edgeStdlibH2, edgeFastH2, edgeH2
		nginxes[0].name, nginxes[1].name = nginxHeadersH2, nginxH2
	}
	for _, e := range edges {
		var pp string
		if o.profile != "" {
			if pp, err = freeAddr(); err != nil {
				return cmp, err
			}
		}
		p, addr, err := startEdgeTLS(o.zeitwork, dbURL, filepath.Join(dir, "routes-"+e.path+".json"), e.path, c, pp)
		if err != nil {
			return cmp, err
		}
		proxies = append(proxies, proxy{name: e.name, addr: addr, p: p, pprof: pp, tls: true, h2: h2})
	}
	for _, n := range nginxes {
		p, addr, err := startNginx(filepath.Join(dir, "nginx-"+fmt.Sprint(len(n.headers))), addrs, n.headers, &c, h2)
		if err != nil {
			return cmp, err
		}
		proxies = append(proxies, proxy{name: n.name, addr: addr, p: p, tls: true, h2: h2})
	}
	for i := range proxies {
		proxies[i].backend = backend
		proxies[i].cipher = new(string)
		if err := waitServes(ctx, proxies[i], host); err != nil {
			return cmp, err
		}
		cmp.names = append(cmp.names, proxies[i].name)
	}
	if cmp.load, err = compare(ctx, o, proxies, host); err != nil {
		return cmp, fmt.Errorf("over TLS: %w", err)
	}
	if o.profile != "" {
		// At saturation only (no half-load run), and no perf profile: those
		// are for the plain data paths.
		if cmp.profiles, err = profileAll(ctx, o, proxies, host, 0); err != nil {
			return cmp, fmt.Errorf("profile: %w", err)
		}
	}
	cmp.ciphers = map[string]string{}
	for _, px := range proxies {
		if err := px.p.alive(); err != nil {
			return cmp, err
		}
		if *px.cipher != "" {
			cmp.ciphers[px.name] = *px.cipher
		}
	}
	return cmp, nil
}
