package edge

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/zeitwork/zeitwork/internal/hostname"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const clusterToken = "cluster-secret"

// stage is an edge in front of a real node-proxy in front of app servers.
type stage struct {
	t         *testing.T
	routes    *Routes
	metrics   *Metrics
	proxy     *Proxy
	edge      *httptest.Server
	node      *httptest.Server
	project   uuid.UUID
	mu        sync.Mutex
	instances map[uuid.UUID]nodeproxy.Target
	backends  []Backend
}

func newStage(t *testing.T, path string, timeout time.Duration) *stage {
	t.Helper()
	return newStageTrusting(t, path, timeout, nil)
}

// newStageTrusting is newStage with the edge believing the forwarding
// headers of the peers trust says yes to.
func newStageTrusting(t *testing.T, path string, timeout time.Duration, trust func(netip.Addr) bool) *stage {
	t.Helper()
	s := &stage{t: t, routes: &Routes{}, project: id.New(), instances: map[uuid.UUID]nodeproxy.Target{}}
	s.metrics = NewMetrics(prometheus.NewRegistry())
	np := nodeproxy.New(clusterToken, func(_ context.Context, iid uuid.UUID) (nodeproxy.Target, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		tg, ok := s.instances[iid]
		return tg, ok
	}, nil, zlog.Discard())
	s.node = httptest.NewServer(np)
	t.Cleanup(s.node.Close)
	p := NewProxy(ProxyConfig{Routes: s.routes, Token: clusterToken, UpstreamTimeout: timeout, TrustForwarded: trust, Metrics: s.metrics, Log: zlog.Discard()})
	s.proxy, s.edge = p, serveProxy(t, p, path)
	return s
}

// pathTLS is the fast path serving TLS (FastTLSListener), which is how
// the edge serves HTTPS on its fast path; pathLoopTLS is the loop path's
// (LoopTLSListener: HTTP/1.1 on the event loops after the handshake): the
// tests run them as more paths. pathH2 is the fast path's server with
// clients that speak HTTP/2, which the edge's own server serves and the
// direct exchange forwards; pathLoopH2 is the loop path's, whose loops
// read the frames (h2_loop.go).
const (
	pathTLS     = "fast+tls"
	pathLoopTLS = "loop+tls"
	pathH2      = "fast+h2"
	pathLoopH2  = "loop+h2"
)

// allPaths are the data paths and the ways of serving TLS.
var allPaths = append(DataPaths[:len(DataPaths):len(DataPaths)], pathTLS, pathLoopTLS, pathH2, pathLoopH2)

// h2Paths are the ways the edge serves HTTP/2.
var h2Paths = []string{pathH2, pathLoopH2}

// isH2 says the path's clients speak HTTP/2.
func isH2(path string) bool { return path == pathH2 || path == pathLoopH2 }

// forEachPath runs a test on each of the edge's data paths, on TLS and
// on HTTP/2.
func forEachPath(t *testing.T, test func(t *testing.T, path string)) {
	for _, path := range allPaths {
		t.Run(path, func(t *testing.T) { test(t, path) })
	}
}

// forEachH2Path runs a test on each way the edge serves HTTP/2.
func forEachH2Path(t *testing.T, test func(t *testing.T, path string)) {
	for _, path := range h2Paths {
		t.Run(path, func(t *testing.T) { test(t, path) })
	}
}

// serveProxy serves p on a test server through the data path, as the
// edge's Serve does: net/http with ReverseProxy alone on the stdlib path,
// else the fast path in front of net/http with the direct exchange.
func serveProxy(t testing.TB, p *Proxy, path string) *httptest.Server {
	var h http.Handler = p
	if path != DataPathStdlib {
		h = p.Direct()
	}
	srv := httptest.NewUnstartedServer(h)
	switch path {
	case DataPathFast:
		srv.Listener = p.FastListener(srv.Listener, 5*time.Second, time.Minute)
	case DataPathLoop:
		fl := p.LoopListener(srv.Listener, 5*time.Second, time.Minute)
		if fl.loops == nil {
			t.Fatal("the loop data path runs on goroutines")
		}
		srv.Listener = fl
	case pathTLS, pathH2:
		srv.Listener = p.FastTLSListener(srv.Listener, testTLS(t).server, h, 5*time.Second, time.Minute)
		KeepTLSState(srv.Config)
		srv.EnableHTTP2 = path == pathH2 // read by newClient, not by Start
	case pathLoopTLS, pathLoopH2:
		fl := p.LoopTLSListener(srv.Listener, testTLS(t).server, h, 5*time.Second, time.Minute)
		if fl.loops == nil {
			t.Fatal("HTTPS on the loop data path runs on goroutines")
		}
		srv.Listener = fl
		KeepTLSState(srv.Config)
		srv.EnableHTTP2 = path == pathLoopH2
	}
	srv.Start()
	if path == pathTLS || path == pathLoopTLS || isH2(path) {
		srv.URL = "https://" + srv.Listener.Addr().String()
	}
	t.Cleanup(srv.Close)
	return srv
}

// testCerts is a self-signed certificate for 127.0.0.1, the server's
// configuration with it (offering what internal/certs offers), and a
// client configuration that trusts it.
type testCerts struct {
	server, client *tls.Config
}

var testTLSOnce struct {
	sync.Once
	c   testCerts
	err error
}

func testTLS(t testing.TB) testCerts {
	testTLSOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			testTLSOnce.err = err
			return
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge test"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"*.zeitwork.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			testTLSOnce.err = err
			return
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			testTLSOnce.err = err
			return
		}
		roots := x509.NewCertPool()
		roots.AddCert(leaf)
		testTLSOnce.c = testCerts{
			server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}},
			client: &tls.Config{RootCAs: roots},
		}
	})
	if testTLSOnce.err != nil {
		t.Fatal(testTLSOnce.err)
	}
	return testTLSOnce.c
}

// clientOf is a client of srv: HTTP/2 on the pathH2 stage, else HTTP/1.1
// (trusting its certificate when it serves TLS).
func clientOf(t testing.TB, srv *httptest.Server) *http.Client {
	return newClient(t, srv, 0)
}

// newClient is clientOf with its own connections, at most maxConns of them
// (0: no limit).
func newClient(t testing.TB, srv *httptest.Server, maxConns int) *http.Client {
	tr := &http.Transport{MaxConnsPerHost: maxConns}
	if strings.HasPrefix(srv.URL, "https:") {
		tr.TLSClientConfig = testTLS(t).client.Clone()
		tr.ForceAttemptHTTP2 = srv.EnableHTTP2
	} else if maxConns == 0 {
		return http.DefaultClient
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// dialEdge opens a connection to srv (a TLS one, with no ALPN, when it
// serves TLS) for raw HTTP/1.x.
func dialEdge(t testing.TB, srv *httptest.Server) (net.Conn, error) {
	addr := srv.Listener.Addr().String()
	if strings.HasPrefix(srv.URL, "https:") {
		return tls.Dial("tcp", addr, testTLS(t).client)
	}
	return net.Dial("tcp", addr)
}

// scheme is the X-Forwarded-Proto an app behind the stage's edge sees.
func (s *stage) scheme() string {
	if strings.HasPrefix(s.edge.URL, "https:") {
		return "https"
	}
	return "http"
}

// app starts an instance running h behind the node-proxy and routes to it.
func (s *stage) app(h http.Handler) uuid.UUID {
	srv := httptest.NewServer(h)
	s.t.Cleanup(srv.Close)
	iid := id.New()
	s.mu.Lock()
	s.instances[iid] = nodeproxy.Target{Addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), Healthy: true}
	s.mu.Unlock()
	s.backend(Backend{InstanceID: iid, NodeProxy: s.node.Listener.Addr().String()})
	return iid
}

// backend adds a backend to shop.zeitwork.app and publishes the table.
func (s *stage) backend(b Backend) {
	s.backends = append(s.backends, b)
	s.routes.Store(TableOf(map[string]Route{
		"shop.zeitwork.app":  {ProjectID: s.project, DeploymentID: id.New(), Backends: append([]Backend(nil), s.backends...)},
		"empty.zeitwork.app": {ProjectID: id.New(), DeploymentID: id.New()},
	}))
}

func (s *stage) get(host, path string, header ...string) (*http.Response, string) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.edge.URL+path, nil)
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := clientOf(s.t, s.edge).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (s *stage) requests(code string) float64 {
	return testutil.ToFloat64(s.metrics.requests.WithLabelValues(s.project.String(), code))
}

// waitRequests waits until requests_total{code} reaches want. The proxy
// counts a request after its handler returns, which is after the client
// has read the whole response, so a read right after the response races
// the last increment.
func (s *stage) waitRequests(code string, want float64) {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.requests(code)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			s.t.Fatalf("requests_total{code=%s} = %v, want %v", code, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s host=%s xff=%s xfh=%s xfp=%s rid=%s token=%q instance=%q",
			name, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get(HeaderRequestID), r.Header.Get(nodeproxy.HeaderToken), r.Header.Get(nodeproxy.HeaderInstance))
	})
}

func TestProxyForwardsWithHeadersAndRequestID(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.app(echo("a"))
		resp, body := s.get("Shop.Zeitwork.App:443", "/x", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Proto", "https")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		rid := resp.Header.Get(HeaderRequestID)
		want := "a host=Shop.Zeitwork.App:443 xff=127.0.0.1 xfh=Shop.Zeitwork.App:443 xfp=" + s.scheme() + " rid=" + rid + ` token="" instance=""`
		if rid == "" || body != want || len(resp.Header.Values(HeaderRequestID)) != 1 {
			t.Fatalf("app saw\n%s\nwant\n%s (response ids %q)", body, want, resp.Header.Values(HeaderRequestID))
		}
		// A sane client request id is kept end to end; a hostile one replaced.
		if resp, body := s.get("shop.zeitwork.app", "/", HeaderRequestID, "client-trace-12345"); resp.Header.Get(HeaderRequestID) != "client-trace-12345" || !strings.Contains(body, "rid=client-trace-12345") {
			t.Fatalf("client id not kept: %q, %s", resp.Header.Get(HeaderRequestID), body)
		}
		if resp, _ := s.get("shop.zeitwork.app", "/", HeaderRequestID, "bad id\twith<script>"); strings.Contains(resp.Header.Get(HeaderRequestID), "script") {
			t.Fatalf("hostile request id echoed: %q", resp.Header.Get(HeaderRequestID))
		}
		s.waitRequests("200", 3)
	})
}

// Headers that say who the client is or how it came reach apps only from
// a trusted proxy in front: from anyone else they are lies (an app that
// rate-limits or logs by X-Real-IP would believe them).
func TestProxyStripsClientAddressHeadersFromUntrustedPeers(t *testing.T) {
	headers := []string{"X-Real-IP", "True-Client-IP", "X-Forwarded-Ssl", "CF-Connecting-IP"}
	seen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range headers {
			fmt.Fprintf(w, "%s=%q ", h, r.Header.Values(h))
		}
		fmt.Fprintf(w, "kept=%q", r.Header.Get("X-Other"))
	})
	sent := []string{"X-Real-IP", "6.6.6.6", "True-Client-IP", "6.6.6.7", "X-Forwarded-Ssl", "on", "CF-Connecting-IP", "6.6.6.8", "X-Other", "yes"}
	for _, tc := range []struct {
		name  string
		trust func(netip.Addr) bool
		want  string
	}{
		{"untrusted", nil, `X-Real-IP=[] True-Client-IP=[] X-Forwarded-Ssl=[] CF-Connecting-IP=[] kept="yes"`},
		{"not in the trusted ranges", func(netip.Addr) bool { return false }, `X-Real-IP=[] True-Client-IP=[] X-Forwarded-Ssl=[] CF-Connecting-IP=[] kept="yes"`},
		{"trusted", func(a netip.Addr) bool { return a.IsLoopback() },
			`X-Real-IP=["6.6.6.6"] True-Client-IP=["6.6.6.7"] X-Forwarded-Ssl=["on"] CF-Connecting-IP=["6.6.6.8"] kept="yes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachPath(t, func(t *testing.T, path string) {
				s := newStageTrusting(t, path, 5*time.Second, tc.trust)
				s.app(seen)
				resp, body := s.get("shop.zeitwork.app", "/", sent...)
				if resp.StatusCode != 200 || body != tc.want {
					t.Fatalf("status %d, app saw\n%s\nwant\n%s", resp.StatusCode, body, tc.want)
				}
				if tc.trust != nil {
					return
				}
				// Spelled otherwise, and twice: still stripped.
				c, err := dialEdge(t, s.edge)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nx-real-ip: 6.6.6.6\r\nX-REAL-IP: 6.6.6.9\r\ncf-connecting-ip: 6.6.6.8\r\nX-Other: yes\r\n\r\n")
				raw, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(raw.Body)
				raw.Body.Close()
				if raw.StatusCode != 200 || string(b) != tc.want {
					t.Fatalf("raw request: status %d, app saw\n%s\nwant\n%s", raw.StatusCode, b, tc.want)
				}
			})
		})
	}
}

func TestProxyUnknownHostAndNoHealthyInstance(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.app(echo("a"))
		for _, host := range []string{"nope.zeitwork.app", "127.0.0.1", "[::1]:80", "shop.zeitwork.app..", "xn--.zeitwork.app"} {
			resp, body := s.get(host, "/")
			if resp.StatusCode != 404 || resp.Header.Get("X-Zeitwork-Error") != "unknown_host" || !strings.Contains(body, "No app here") {
				t.Errorf("host %q: %d %q %s", host, resp.StatusCode, resp.Header.Get("X-Zeitwork-Error"), body)
			}
		}
		// The page escapes what the client sent (an HTTP/2 client refuses
		// to send such a name).
		if !isH2(path) {
			if _, body := s.get("<b>.example.com", "/"); strings.Contains(body, "<b>") {
				t.Errorf("unescaped host in page: %s", body)
			}
		}
		resp, _ := s.get("empty.zeitwork.app", "/")
		if resp.StatusCode != 503 || resp.Header.Get("X-Zeitwork-Error") != "no_healthy_instance" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("route without instances: %d %q", resp.StatusCode, resp.Header.Get("X-Zeitwork-Error"))
		}
	})
}

func TestPickPrefersFewerInFlightAndSkipsDownInstances(t *testing.T) {
	var routes Routes
	bs := []Backend{{InstanceID: id.New()}, {InstanceID: id.New()}, {InstanceID: id.New()}}
	routes.Store(TableOf(map[string]Route{"a": {Backends: bs}}))
	route, _ := routes.Load().Lookup("a")
	bs = route.Backends
	bs[0].health.inflight.Store(10)
	counts := map[int]int{}
	for range 3000 {
		i, ok := pick(bs, nil)
		if !ok {
			t.Fatal("no pick")
		}
		counts[i]++
	}
	// Power of two choices: the busiest is never the lesser of two.
	if counts[0] != 0 || counts[1] < 1000 || counts[2] < 1000 {
		t.Fatalf("picks %v", counts)
	}
	bs[0].health.inflight.Store(0)
	bs[1].health.down(time.Now())
	for range 1000 {
		if i, _ := pick(bs, nil); i == 1 {
			t.Fatal("picked an instance that is cooling down")
		}
	}
	// Tried ones are out; a down one is used when nothing else is left.
	if i, ok := pick(bs, []int{0, 2}); !ok || i != 1 {
		t.Fatalf("pick with only the down one left = %d, %v", i, ok)
	}
	if _, ok := pick(bs, []int{0, 1, 2}); ok {
		t.Fatal("picked with every backend tried")
	}
	// Health carries over to the next table for the same instance.
	next := []Backend{{InstanceID: bs[1].InstanceID}}
	routes.Store(TableOf(map[string]Route{"a": {Backends: next}}))
	route, _ = routes.Load().Lookup("a")
	next = route.Backends
	if next[0].health != bs[1].health || next[0].health.isUp(time.Now().UnixNano()) {
		t.Fatal("health state lost across tables")
	}
}

func TestProxySpreadsLoadAcrossInstances(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		var hits [3]atomic.Int64
		for i := range hits {
			s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits[i].Add(1) }))
		}
		for range 300 {
			if resp, body := s.get("shop.zeitwork.app", "/"); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		}
		for i := range hits {
			if n := hits[i].Load(); n < 50 {
				t.Fatalf("instance %d got %d of 300 requests", i, n)
			}
		}
	})
}

func TestProxyRetriesWhenNothingReachedAnApp(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		var served atomic.Int64
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			served.Add(1)
			fmt.Fprintf(w, "got %s", b)
		}))
		// A node that refuses connections, and an instance its node no longer has.
		s.backend(Backend{InstanceID: id.New(), NodeProxy: testenv.RefusedAddr(t)})
		s.backend(Backend{InstanceID: id.New(), NodeProxy: s.node.Listener.Addr().String()})

		for i := range 60 {
			req, _ := http.NewRequest("POST", s.edge.URL+"/", strings.NewReader(fmt.Sprintf("body-%d", i)))
			req.Host = "shop.zeitwork.app"
			resp, err := clientOf(t, s.edge).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != fmt.Sprintf("got body-%d", i) {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
		}
		if served.Load() != 60 {
			t.Fatalf("app served %d of 60", served.Load())
		}
		refused := testutil.ToFloat64(s.metrics.upstreamErrors.WithLabelValues(s.project.String(), "refused"))
		gone := testutil.ToFloat64(s.metrics.upstreamErrors.WithLabelValues(s.project.String(), "instance_gone"))
		// Passive health: each bad instance is tried once, then skipped while
		// it cools down (a few more tries if the machine is slow).
		if refused < 1 || gone < 1 || refused+gone > 20 {
			t.Fatalf("upstream errors: refused %v, gone %v", refused, gone)
		}
	})
}

func TestProxyAnswers503WhenEveryInstanceIsUnreachable(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.backend(Backend{InstanceID: id.New(), NodeProxy: s.node.Listener.Addr().String()}) // not on the node
		s.backend(Backend{InstanceID: id.New(), NodeProxy: testenv.RefusedAddr(t)})
		resp, _ := s.get("shop.zeitwork.app", "/")
		if resp.StatusCode != 503 || resp.Header.Get("X-Zeitwork-Error") != "no_healthy_instance" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Zeitwork-Error"))
		}
		s.waitRequests("503", 1)
	})
}

func TestProxyTimesOutSlowApps(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 200*time.Millisecond)
		release := make(chan struct{})
		defer close(release)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		resp, _ := s.get("shop.zeitwork.app", "/")
		if resp.StatusCode != 504 || resp.Header.Get("X-Zeitwork-Error") != "upstream_timeout" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Zeitwork-Error"))
		}
	})
}

func TestProxyStreamsResponses(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		second := make(chan struct{})
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			<-second
			fmt.Fprint(w, "data: two\n\n")
		}))
		req, _ := http.NewRequest("GET", s.edge.URL+"/events", nil)
		req.Host = "shop.zeitwork.app"
		resp, err := clientOf(t, s.edge).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		// The first event arrives while the app is still holding the second.
		if line, err := r.ReadString('\n'); err != nil || line != "data: one\n" {
			t.Fatalf("first event %q, %v", line, err)
		}
		close(second)
		rest, _ := io.ReadAll(r)
		if string(rest) != "\ndata: two\n\n" {
			t.Fatalf("rest %q", rest)
		}
	})
}

func TestProxyCarriesWebsockets(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(r.Context())
				if err != nil {
					return
				}
				c.Write(r.Context(), typ, append([]byte("echo: "), msg...))
			}
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.edge.URL, "http")+"/ws", &websocket.DialOptions{Host: "shop.zeitwork.app", HTTPClient: clientOf(t, s.edge)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		for i := range 3 {
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "m%d", i)); err != nil {
				t.Fatal(err)
			}
			_, msg, err := c.Read(ctx)
			if err != nil || string(msg) != fmt.Sprintf("echo: m%d", i) {
				t.Fatalf("read %q, %v", msg, err)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

// FuzzProxyHost sends arbitrary Host headers through the whole request
// path: the answer is always the edge's 404 page or the route's 503, never
// a panic or a 5xx of another kind.
func FuzzProxyHost(f *testing.F) {
	for _, s := range []string{"shop.zeitwork.app", "SHOP.zeitwork.app.:80", "[::1]", "1.2.3.4:80", "bücher.example", "\x00", ""} {
		f.Add(s)
	}
	routes := &Routes{}
	routes.Store(TableOf(map[string]Route{"shop.zeitwork.app": {ProjectID: id.New()}}))
	p := NewProxy(ProxyConfig{Routes: routes, Token: clusterToken, UpstreamTimeout: time.Second, Log: zlog.Discard()})
	f.Fuzz(func(t *testing.T, host string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		want := http.StatusNotFound
		if h, err := hostname.Normalize(host); err == nil && h == "shop.zeitwork.app" {
			want = http.StatusServiceUnavailable
		}
		if rec.Code != want || rec.Header().Get(HeaderRequestID) == "" {
			t.Fatalf("Host %q: %d, want %d", host, rec.Code, want)
		}
	})
}
