package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/testenv"
)

// pebbleCA is a real Pebble ACME server for one test. Its VA resolves
// names through the test's DNS server and validates HTTP-01 and
// TLS-ALPN-01 on HTTP and TLS, listeners the test serves the Manager on.
// ACME requests pass through a proxy that records every new order, so a
// test can tell whether the CA was asked at all.
type pebbleCA struct {
	Directory string         // ACME directory URL (through the proxy)
	CARoots   string         // PEM file to trust for the directory (ACME_CA_ROOTS)
	Roots     *x509.CertPool // Pebble's issuing root, for checking served chains
	HTTP, TLS net.Listener   // where Pebble's VA connects for HTTP-01 and TLS-ALPN-01

	mu     sync.Mutex
	orders [][]string // identifiers of each new order, in order
}

func startPebble(t *testing.T, dnsAddr string) *pebbleCA {
	t.Helper()
	bin := testenv.Binary(t, "pebble")
	dir := t.TempDir()
	serverCert, certPEM := selfSigned(t, dir)
	p := &pebbleCA{CARoots: filepath.Join(dir, "cert.pem")}
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(certPEM)

	var err error
	if p.HTTP, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if p.TLS, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.HTTP.Close(); p.TLS.Close() })
	// Pebble binds its own two ports; one may be taken between choosing it
	// and Pebble binding it, so a start that fails that way is retried.
	var wfe string
	for attempt := 1; ; attempt++ {
		wfe, err = p.launch(t, bin, dir, dnsAddr, trust)
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}

	// The proxy keeps the client's Host, so the URLs Pebble puts in its
	// answers (built from Host) point back through the proxy.
	target, _ := url.Parse("https://" + wfe)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust}},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			p.recordOrder(t, body)
		}
		rp.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.Directory = srv.URL + "/dir"
	return p
}

// launch starts Pebble on two free ports and waits until it serves; it
// returns the WFE's address.
func (p *pebbleCA) launch(t *testing.T, bin, dir, dnsAddr string, trust *x509.CertPool) (string, error) {
	addrs := freeAddrs(t, 2)
	wfe, mgmt := addrs[0], addrs[1]
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           wfe,
		"managementListenAddress": mgmt,
		"certificate":             filepath.Join(dir, "cert.pem"),
		"privateKey":              filepath.Join(dir, "key.pem"),
		"httpPort":                p.HTTP.Addr().(*net.TCPAddr).Port,
		"tlsPort":                 p.TLS.Addr().(*net.TCPAddr).Port,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"profiles":                map[string]any{"default": map[string]any{"description": "test", "validityPeriod": 7776000}},
	}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "pebble.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	out := &testenv.Buffer{}
	cmd := exec.Command(bin, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}

	// Ready once both of its servers answer: the WFE its directory, the
	// management interface the issuing root.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust}}, Timeout: 5 * time.Second}
	get := func(u string) ([]byte, error) {
		resp, err := client.Get(u)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
		}
		return body, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return "", fmt.Errorf("pebble exited:\n%s", out.String())
		default:
		}
		root, err := get("https://" + mgmt + "/roots/0")
		if err == nil {
			_, err = get("https://" + wfe + "/dir")
		}
		if err == nil {
			p.Roots = x509.NewCertPool()
			if !p.Roots.AppendCertsFromPEM(root) {
				stop()
				return "", fmt.Errorf("pebble root is not PEM: %q", root)
			}
			break
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("pebble not ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("pebble output:\n%s", out.String())
		}
	})
	return wfe, nil
}

// recordOrder notes the identifiers of a newOrder request (a JWS whose
// payload is the order).
func (p *pebbleCA) recordOrder(t *testing.T, jws []byte) {
	var msg struct{ Payload string }
	var order struct{ Identifiers []struct{ Value string } }
	if err := json.Unmarshal(jws, &msg); err != nil {
		t.Errorf("unreadable newOrder request %q: %v", jws, err)
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(msg.Payload)
	if err == nil {
		err = json.Unmarshal(payload, &order)
	}
	if err != nil {
		t.Errorf("unreadable newOrder payload %q: %v", msg.Payload, err)
		return
	}
	var names []string
	for _, id := range order.Identifiers {
		names = append(names, id.Value)
	}
	p.mu.Lock()
	p.orders = append(p.orders, names)
	p.mu.Unlock()
}

// Orders returns the identifiers of every order the CA was asked for.
func (p *pebbleCA) Orders() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]string(nil), p.orders...)
}

// selfSigned writes a certificate for 127.0.0.1 and localhost, which
// Pebble's WFE and the proxy serve, to dir/cert.pem and dir/key.pem.
func selfSigned(t *testing.T, dir string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM
}

// freeAddrs returns n distinct loopback addresses nothing listens on
// right now.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// serve runs the edge's two listeners for m the way the edge does: the
// HTTP-01 handler in front of a 404 on plain HTTP, and TLSConfig on HTTPS.
func serve(t *testing.T, m *Manager, httpL, tlsL net.Listener) {
	t.Helper()
	// Refused handshakes are what some tests are about: not worth a line.
	quiet := log.New(io.Discard, "", 0)
	plain := &http.Server{Handler: m.HTTPChallenge(http.NotFoundHandler()), ErrorLog: quiet}
	secure := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }), TLSConfig: m.TLSConfig(), ErrorLog: quiet}
	if httpL != nil {
		go plain.Serve(httpL)
	}
	go secure.ServeTLS(tlsL, "", "")
	t.Cleanup(func() { plain.Close(); secure.Close() })
}

// handshake connects to addr with SNI name, trusting only roots, and
// returns the leaf it was served.
func handshake(ctx context.Context, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}
