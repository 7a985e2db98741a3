package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// handed is how many connections the fast path gave to the stdlib path.
func (s *stage) handed() int64 {
	return s.edge.Listener.(*FastListener).handed.Load()
}

// offLoop is how many connections the event loops gave to goroutines.
func (s *stage) offLoop() int64 {
	return s.edge.Listener.(*FastListener).offLoop.Load()
}

// onLoop is how many TLS connections the event loops took after their
// handshake.
func (s *stage) onLoop() int64 {
	return s.edge.Listener.(*FastListener).onLoop.Load()
}

// onLoopH2 is how many HTTP/2 streams the event loops served themselves.
func (s *stage) onLoopH2() int64 {
	return s.edge.Listener.(*FastListener).onLoopH2.Load()
}

// forEachFastPath runs a test on the edge's own data paths: the goroutine
// per connection, the event loops, and both serving TLS.
func forEachFastPath(t *testing.T, test func(t *testing.T, path string)) {
	for _, path := range []string{DataPathFast, DataPathLoop, pathTLS, pathLoopTLS} {
		t.Run(path, func(t *testing.T) { test(t, path) })
	}
}

func TestFastPathServesPlainRequestsItself(t *testing.T) {
	forEachFastPath(t, testFastPathServesPlainRequestsItself)
}

func testFastPathServesPlainRequestsItself(t *testing.T, path string) {
	s := newStage(t, path, 5*time.Second)
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.RequestURI(), b)
	}))
	for i := range 20 {
		resp, body := s.get("shop.zeitwork.app", fmt.Sprintf("/p?i=%d", i))
		if resp.StatusCode != 200 || body != fmt.Sprintf(`GET /p?i=%d ""`, i) {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest("POST", s.edge.URL+"/post", strings.NewReader(strings.Repeat("x", 20000)))
	req.Host = "shop.zeitwork.app"
	resp, err := clientOf(t, s.edge).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != fmt.Sprintf("POST /post %q", strings.Repeat("x", 20000)) {
		t.Fatalf("%d %.80q", resp.StatusCode, body)
	}
	if n := s.handed(); n != 0 {
		t.Fatalf("%d connections went to the stdlib path", n)
	}
	if n := s.offLoop(); n != 0 {
		t.Fatalf("%d connections left the event loops", n)
	}
	if n := s.onLoop(); path == pathLoopTLS && n == 0 {
		t.Fatal("no TLS connection went to the event loops")
	}
	s.waitRequests("200", 21)
}

func TestFastPathHandsUnusualRequestsToStdlib(t *testing.T) {
	forEachFastPath(t, testFastPathHandsUnusualRequestsToStdlib)
}

func testFastPathHandsUnusualRequestsToStdlib(t *testing.T, path string) {
	s := newStage(t, path, 5*time.Second)
	s.app(echo("a"))
	raw := func(req string) string {
		c, err := dialEdge(t, s.edge)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		defer resp.Body.Close()
		return resp.Status
	}
	// Whatever net/http answers, the fast path must not answer itself.
	for _, tc := range []struct{ req, status string }{
		{"GET / HTTP/1.0\r\nHost: shop.zeitwork.app\r\n\r\n", "200 OK"},
		{"GET / HTTP/1.1\r\nHost: nope.zeitwork.app\r\n\r\n", "404 Not Found"},
		{"GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nHost: other.example\r\n\r\n", "400 Bad Request"},
		{"GET / HTTP/1.1\nHost: shop.zeitwork.app\n\n", "200 OK"},
		{"GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nX-A: b\r\n c\r\n\r\n", "200 OK"},
		{"POST / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", "200 OK"},
		{"POST / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400 Bad Request"},
		{"GET http://shop.zeitwork.app/ HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n", "200 OK"},
		{"GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", "200 OK"},
	} {
		if got := raw(tc.req); got != tc.status {
			t.Errorf("%.60q: %s, want %s", tc.req, got, tc.status)
		}
	}
	if n := s.handed(); n != 9 {
		t.Fatalf("%d of 9 connections went to the stdlib path", n)
	}
	// The event loops give them to the goroutine path, which gives them on.
	if n, want := s.offLoop(), map[string]int64{DataPathFast: 0, DataPathLoop: 9, pathLoopTLS: 9}[path]; n != want {
		t.Fatalf("%d connections left the event loops, want %d", n, want)
	}
}

// TestFastPathHeaderHygiene: what the app and the client see of hop-by-hop
// and edge-owned headers is the same on every path.
func TestFastPathHeaderHygiene(t *testing.T) {
	seen := map[string]string{}
	for _, path := range allPaths {
		s := newStage(t, path, 5*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var keys []string
			for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Authorization", "Te", "Trailer", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Zeitwork-Proxy-Token", "X-Zeitwork-Instance", "X-Custom", "User-Agent", "Content-Length"} {
				keys = append(keys, fmt.Sprintf("%s=%q", k, r.Header.Values(k)))
			}
			// Told apart from the body: over TLS it is longer.
			w.Header().Set("X-Seen-Proto", strings.Join(r.Header.Values("X-Forwarded-Proto"), ","))
			w.Header().Set("Keep-Alive", "timeout=1")
			w.Header().Set("X-Request-Id", "from-the-app")
			w.Header().Set("Proxy-Authenticate", "Basic")
			w.Header().Set("X-App", "kept")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header()["x-lower"] = []string{"kept as sent, canonical after"}
			fmt.Fprint(w, strings.Join(keys, " "))
		}))
		te := "trailers, deflate"
		if isH2(path) {
			te = "trailers" // all HTTP/2 allows (and its client sends no Connection or Keep-Alive)
		}
		resp, body := s.get("shop.zeitwork.app", "/", "Connection", "keep-alive", "Keep-Alive", "timeout=5", "Proxy-Authorization", "Basic x",
			"Te", te, "Forwarded", "for=6.6.6.6", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil", "X-Forwarded-Proto", "https",
			"X-Zeitwork-Proxy-Token", "forged", "X-Zeitwork-Instance", "forged", "X-Custom", "yes", "User-Agent", "ua/1")
		iid := s.backends[0].InstanceID.String()
		body = strings.ReplaceAll(body, iid, "IID")
		var respKeys []string
		for _, k := range []string{"Keep-Alive", "Proxy-Authenticate", "X-App", "Content-Length", "Transfer-Encoding", "Set-Cookie", "X-Lower"} {
			respKeys = append(respKeys, fmt.Sprintf("%s=%q", k, resp.Header.Values(k)))
		}
		rid := resp.Header.Values(HeaderRequestID)
		if len(rid) != 1 || rid[0] == "from-the-app" {
			t.Fatalf("%s: response request ids %q (%s: %s)", path, rid, resp.Status, body)
		}
		if got, want := resp.Header.Get("X-Seen-Proto"), s.scheme(); got != want {
			t.Fatalf("%s: app saw X-Forwarded-Proto %q, want %q", path, got, want)
		}
		seen[path] = body + " | " + strings.Join(respKeys, " ")
	}
	for _, path := range []string{DataPathFast, DataPathLoop, pathTLS, pathLoopTLS, pathH2, pathLoopH2} {
		if seen[DataPathStdlib] != seen[path] {
			t.Fatalf("stdlib:\n%s\n%s:\n%s", seen[DataPathStdlib], path, seen[path])
		}
	}
	if !strings.Contains(seen[DataPathFast], `X-Zeitwork-Proxy-Token=[]`) || !strings.Contains(seen[DataPathFast], `Te=["trailers"]`) ||
		!strings.Contains(seen[DataPathFast], `Set-Cookie=["a=1" "b=2"]`) || !strings.Contains(seen[DataPathFast], `X-Lower=["kept as sent, canonical after"]`) {
		t.Fatalf("unexpected view: %s", seen[DataPathFast])
	}
}

// TestFastPathStreamsBodies: large bodies of every framing arrive whole,
// and the connection is reused after each.
func TestFastPathStreamsBodies(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/length":
				w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				w.Write(big)
			case "/chunked":
				w.Header().Set("Trailer", "X-Sum")
				for i := 0; i < len(big); i += 100_000 {
					w.Write(big[i:min(i+100_000, len(big))])
					w.(http.Flusher).Flush()
				}
				w.Header().Set("X-Sum", "ok")
			case "/empty":
				w.WriteHeader(204)
			}
		}))
		client := newClient(t, s.edge, 1)
		for range 3 {
			for _, p := range []string{"/length", "/chunked", "/empty"} {
				req, _ := http.NewRequest("GET", s.edge.URL+p, nil)
				req.Host = "shop.zeitwork.app"
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := big
				if p == "/empty" {
					want = nil
				}
				if err != nil || !bytes.Equal(b, want) {
					t.Fatalf("%s: %d bytes, %v", p, len(b), err)
				}
				if p == "/chunked" && resp.Trailer.Get("X-Sum") != "ok" {
					t.Fatalf("trailer %q", resp.Trailer)
				}
			}
		}
		req, _ := http.NewRequest("HEAD", s.edge.URL+"/length", nil)
		req.Host = "shop.zeitwork.app"
		resp, err := client.Do(req)
		if err != nil || resp.ContentLength != int64(len(big)) {
			t.Fatalf("HEAD: %v %v", resp, err)
		}
		resp.Body.Close()
	})
}

// rawBackend answers every request on a connection with the same small
// response and allocates nothing, so a benchmark counts the edge alone.
func rawBackend(tb testing.TB) string {
	return rawBackendSaying(tb, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 23\r\n\r\nhello from the backend\n")
}

// rawBackendSaying is a backend that answers every request with resp.
func rawBackendSaying(tb testing.TB, answer string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	resp := []byte(answer)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func benchmarkPath(b *testing.B, path string) {
	routes := &Routes{}
	var backends []Backend
	for range 3 {
		backends = append(backends, Backend{InstanceID: id.New(), NodeProxy: rawBackend(b)})
	}
	routes.Store(TableOf(map[string]Route{"shop.zeitwork.app": {ProjectID: uuid.New(), Backends: backends}}))
	p := NewProxy(ProxyConfig{Routes: routes, Token: clusterToken, UpstreamTimeout: 10 * time.Second, Log: zlog.Discard()})
	edge := serveProxy(b, p, path)
	c, err := dialEdge(b, edge)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 16<<10)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
			// The response ends with the backend's body.
			if n >= 23 && string(buf[n-23:n]) == "hello from the backend\n" {
				return
			}
		}
	}
	for range 100 {
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
}

// BenchmarkKeepAliveGET is one keep-alive GET through each data path to a
// backend that allocates nothing: allocs/op are the edge's own.
func BenchmarkKeepAliveGET(b *testing.B) {
	for _, path := range append(DataPaths[:len(DataPaths):len(DataPaths)], pathTLS, pathLoopTLS) {
		b.Run(path, func(b *testing.B) { benchmarkPath(b, path) })
	}
}

var _ = httptest.NewServer

// TestFastPathResponseUntilClose: a body that ends when the app closes
// reaches the client whole and chunked, and the client's connection stays.
func TestFastPathResponseUntilClose(t *testing.T) {
	forEachFastPath(t, testFastPathResponseUntilClose)
}

func testFastPathResponseUntilClose(t *testing.T, path string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
			}()
		}
	}()
	routes := &Routes{}
	routes.Store(TableOf(map[string]Route{"shop.zeitwork.app": {ProjectID: id.New(), Backends: []Backend{{InstanceID: id.New(), NodeProxy: l.Addr().String()}}}}))
	edge := serveProxy(t, NewProxy(ProxyConfig{Routes: routes, Token: clusterToken, UpstreamTimeout: 5 * time.Second, Log: zlog.Discard()}), path)
	c, err := dialEdge(t, edge)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "until close" || len(resp.TransferEncoding) != 1 || resp.Close {
			t.Fatalf("%q %v %v close=%v", b, err, resp.TransferEncoding, resp.Close)
		}
	}
}

// TestFastPathWaitsForASlowBody: a small body that arrives in pieces is
// read by the path that read the head (on the loops too: it does not
// leave them), and the app gets it whole.
func TestFastPathWaitsForASlowBody(t *testing.T) {
	forEachFastPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %s", len(b), b[len(b)-3:])
		}))
		c, err := dialEdge(t, s.edge)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := strings.Repeat("x", 30000) + "end"
		io.WriteString(c, fmt.Sprintf("POST / HTTP/1.1\r\nHost: shop.zeitwork.app\r\nContent-Length: %d\r\n\r\n", len(body)))
		for i := 0; i < len(body); i += 10000 {
			time.Sleep(20 * time.Millisecond)
			io.WriteString(c, body[i:min(i+10000, len(body))])
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "30003 end" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
		if n := s.handed() + s.offLoop(); n != 0 {
			t.Fatalf("%d connections changed hands", n)
		}
	})
}

// TestFastTLSServesHTTP1AndHandsTheRestToStdlib: over TLS, HTTP/1.1 stays
// on the fast path; HTTP/2 is the edge's own server's (net/http's when it
// has none); ACME's acme-tls/1 goes to net/http after the handshake; a
// request the fast path hands over mid-connection is still seen as TLS;
// and a client that speaks plain HTTP to the TLS port is told so, as
// net/http does.
func TestFastTLSServesHTTP1AndHandsTheRestToStdlib(t *testing.T) {
	for _, path := range []string{pathTLS, pathLoopTLS} {
		t.Run(path, func(t *testing.T) { testFastTLSServesHTTP1AndHandsTheRestToStdlib(t, path) })
	}
}

func testFastTLSServesHTTP1AndHandsTheRestToStdlib(t *testing.T, path string) {
	s := newStage(t, path, 5*time.Second)
	s.app(echo("a"))
	for range 3 {
		resp, body := s.get("shop.zeitwork.app", "/")
		if resp.StatusCode != 200 || resp.ProtoMajor != 1 || !strings.Contains(body, "xfp=https ") {
			t.Fatalf("HTTP/1.1: %d %s %s", resp.StatusCode, resp.Proto, body)
		}
	}
	if n := s.handed(); n != 0 {
		t.Fatalf("%d HTTP/1.1 connections went to the stdlib path", n)
	}
	if n, want := s.onLoop(), map[string]int64{pathLoopTLS: 3}[path]; n != want {
		t.Fatalf("%d HTTP/1.1 connections went to the event loops, want %d", n, want)
	}

	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: testTLS(t).client.Clone(), ForceAttemptHTTP2: true}}
	defer h2.CloseIdleConnections()
	for range 2 {
		req, _ := http.NewRequest("GET", s.edge.URL+"/h2", nil)
		req.Host = "shop.zeitwork.app"
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(body), "xfp=https ") {
			t.Fatalf("HTTP/2: %d %s %s", resp.StatusCode, resp.Proto, body)
		}
	}
	// The edge's own HTTP/2 server took them, and the direct exchange.
	if n := s.handed(); n != 0 {
		t.Fatalf("%d connections handed over after one HTTP/2 connection", n)
	}
	// On the loops, the loop served them itself (h2_native.go).
	if n, want := s.proxy.direct.Load(), map[string]int64{pathTLS: 2}[path]; n != want {
		t.Fatalf("%d HTTP/2 requests went through the direct exchange, want %d", n, want)
	}
	if n, want := s.onLoopH2(), map[string]int64{pathLoopTLS: 2}[path]; n != want {
		t.Fatalf("%d HTTP/2 requests served on the event loops, want %d", n, want)
	}

	// HTTP/1.0 is the stdlib path's, mid-connection: the app still hears TLS.
	c, err := dialEdge(t, s.edge)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: shop.zeitwork.app\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "xfp=https ") {
		t.Fatalf("HTTP/1.0 over TLS: %d %s", resp.StatusCode, body)
	}
	if n := s.handed(); n != 1 {
		t.Fatalf("%d connections handed over, want 1", n)
	}
	// On the loops, that connection went there first, then back.
	if n, want := s.offLoop(), map[string]int64{pathLoopTLS: 1}[path]; n != want {
		t.Fatalf("%d connections left the event loops, want %d", n, want)
	}

	// The CA's TLS-ALPN-01 validation handshakes for acme-tls/1 alone.
	acme := testTLS(t).client.Clone()
	acme.NextProtos = []string{"acme-tls/1"}
	ac, err := tls.Dial("tcp", s.edge.Listener.Addr().String(), acme)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if p := ac.ConnectionState().NegotiatedProtocol; p != "acme-tls/1" {
		t.Fatalf("negotiated %q", p)
	}
	// The client's side of the handshake can end before the edge's.
	for deadline := time.Now().Add(10 * time.Second); s.handed() != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections handed over, want 2", s.handed())
		}
	}

	pc, err := net.Dial("tcp", s.edge.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	io.WriteString(pc, "GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n")
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(pc)
	if err != nil || !strings.HasPrefix(string(got), "HTTP/1.0 400 Bad Request\r\n") || !strings.Contains(string(got), "HTTPS server") {
		t.Fatalf("plain HTTP to the TLS port: %q, %v", got, err)
	}
	if n := s.handed(); n != 2 {
		t.Fatalf("%d connections handed over, want 2", n)
	}

	// Without an HTTP/2 handler, net/http serves HTTP/2.
	p := s.proxy
	srv := httptest.NewUnstartedServer(p.Direct())
	listen := p.FastTLSListener
	if path == pathLoopTLS {
		listen = p.LoopTLSListener
	}
	fl := listen(srv.Listener, testTLS(t).server, nil, 5*time.Second, time.Minute)
	srv.Listener = fl
	srv.Start()
	defer srv.Close()
	req, _ := http.NewRequest("GET", "https://"+fl.Addr().String()+"/h2", nil)
	req.Host = "shop.zeitwork.app"
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(body), "xfp=https ") || fl.handed.Load() != 1 {
		t.Fatalf("HTTP/2 handed to net/http: %d %s %q, %d handed over", resp.StatusCode, resp.Proto, body, fl.handed.Load())
	}
}

// loopClients is how many client connections each of the stage's event
// loops holds.
func (s *stage) loopClients() []int {
	var counts []int
	for _, lp := range s.edge.Listener.(*FastListener).loops {
		counts = append(counts, int(lp.clients.Load()))
	}
	return counts
}

func TestLoopsShareABurstOfConnections(t *testing.T) {
	for _, path := range []string{DataPathLoop, pathLoopTLS} {
		t.Run(path, func(t *testing.T) { testLoopsShareABurstOfConnections(t, path) })
	}
}

// A burst of new connections, as a load generator or a page's first
// requests make, is shared by the loops: one epoll wake-up used to give
// all of them to one loop, leaving the other cores idle.
func testLoopsShareABurstOfConnections(t *testing.T, path string) {
	const loops, conns = 4, 64
	prev := runtime.GOMAXPROCS(loops) // a loop per GOMAXPROCS, counted as they start
	s := newStage(t, path, 5*time.Second)
	runtime.GOMAXPROCS(prev)
	if n := len(s.edge.Listener.(*FastListener).loops); n != loops {
		t.Fatalf("%d loops, want %d", n, loops)
	}
	s.app(echo("a"))

	clients := make([]net.Conn, conns)
	errs := make(chan error, conns)
	for i := range clients {
		go func() {
			c, err := dialEdge(t, s.edge)
			clients[i] = c
			errs <- err
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		defer c.Close()
	}
	// Each connection answers a request: it is in a loop, not on its way.
	for i, c := range clients {
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n", i)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "a host=shop.zeitwork.app") {
			t.Fatalf("connection %d: %d %q", i, resp.StatusCode, body)
		}
	}
	counts := s.loopClients()
	total, least, most := 0, conns, 0
	for _, n := range counts {
		total, least, most = total+n, min(least, n), max(most, n)
	}
	// A loop keeps a connection it accepted unless another has two fewer;
	// two loops accepting at once may both add to the same one.
	if total != conns || most-least > 3 {
		t.Fatalf("clients per loop %v, want %d shared within 3", counts, conns)
	}
	for _, c := range clients {
		c.Close()
	}
	// And the loops count them out as they close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		counts := s.loopClients()
		if slices.Equal(counts, make([]int, loops)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clients per loop %v after every client closed", counts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
