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
// (its own HTTP/1.1 path over TLS, and net/http's) and behind nginx with
// ssl on, with one certificate for all of them, wrk speaking HTTP/1.1 over
// TLS with keep-alive. The handshake is paid once per connection; the
// records of every request are what differs.
const (
	edgeLoopTLS      = "edge (loop, TLS)"
	edgeStdlibTLS    = "edge (stdlib, TLS)"
	nginxTLS         = "nginx (TLS)"
	nginxHeadersTLS  = "nginx (TLS, edge's fields)"
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
func startEdgeTLS(bin, dbURL, snapshot, dataPath string, c certPair) (*proc, string, error) {
	https, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, _, _, err := startEdgeEnv(bin, dbURL, snapshot, dataPath,
		"EDGE_HTTPS_ADDR="+https, "EDGE_BENCH_TLS_CERT="+c.cert, "EDGE_BENCH_TLS_KEY="+c.key, "ACME_EMAIL="+benchACMEContact)
	return p, https, err
}

// compareTLS starts the HTTPS proxies, runs the same rounds as the plain
// comparison against them, and stops them: the names in report order
// (nginx last) and the load.
func compareTLS(ctx context.Context, o options, work, dbURL, host string, addrs []string, backend *proc) ([]string, load, error) {
	dir := filepath.Join(work, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, load{}, err
	}
	c, err := writeCert(dir)
	if err != nil {
		return nil, load{}, fmt.Errorf("certificate: %w", err)
	}
	var proxies []proxy
	defer func() {
		for _, px := range proxies {
			px.p.stop()
		}
	}()
	for _, e := range []struct{ name, path string }{{edgeStdlibTLS, "stdlib"}, {edgeLoopTLS, "loop"}} {
		p, addr, err := startEdgeTLS(o.zeitwork, dbURL, filepath.Join(dir, "routes-"+e.path+".json"), e.path, c)
		if err != nil {
			return nil, load{}, err
		}
		proxies = append(proxies, proxy{name: e.name, addr: addr, p: p, tls: true})
	}
	for _, n := range []struct {
		name    string
		headers []string
	}{{nginxHeadersTLS, edgeHeaders}, {nginxTLS, nil}} {
		p, addr, err := startNginx(filepath.Join(dir, "nginx-"+fmt.Sprint(len(n.headers))), addrs, n.headers, &c)
		if err != nil {
			return nil, load{}, err
		}
		proxies = append(proxies, proxy{name: n.name, addr: addr, p: p, tls: true})
	}
	var names []string
	for i := range proxies {
		proxies[i].backend = backend
		if err := waitServes(ctx, proxies[i], host); err != nil {
			return nil, load{}, err
		}
		names = append(names, proxies[i].name)
	}
	l, err := compare(ctx, o, proxies, host)
	if err != nil {
		return nil, load{}, fmt.Errorf("over TLS: %w", err)
	}
	for _, px := range proxies {
		if err := px.p.alive(); err != nil {
			return nil, load{}, err
		}
	}
	return names, l, nil
}
