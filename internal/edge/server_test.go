package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// fakeCerts stands in for internal/certs (tested against a real ACME
// server there): one self-signed certificate, and a challenge responder.
type fakeCerts struct{ cert tls.Certificate }

func newFakeCerts(t *testing.T) *fakeCerts {
	return &fakeCerts{cert: edge.SelfSignedCertificate(t)}
}

func (f *fakeCerts) TLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{f.cert}}
}

func (f *fakeCerts) HTTPChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/"); ok {
			io.WriteString(w, tok+".key-authorization")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type served struct {
	http, https, metrics string
}

func serve(t *testing.T, w *world, cfg config.Edge, certs edge.Certificates) served {
	t.Helper()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ls := edge.Listeners{HTTP: listen(), Metrics: listen()}
	s := served{http: ls.HTTP.Addr().String(), metrics: ls.Metrics.Addr().String()}
	if certs != nil {
		ls.HTTPS = listen()
		s.https = ls.HTTPS.Addr().String()
	}
	cfg.Platform.AppsDomain, cfg.NodeProxy.Token, cfg.PollInterval = "zeitwork.test", token, time.Minute
	cfg.UpstreamTimeout = 10 * time.Second
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.Serve(ctx, cfg, w.pool, certs, ls, zlog.Discard()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge.Serve: %v", err)
		}
	})
	return s
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, c *http.Client, url, host string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// until retries f until it holds: routes reach a new server asynchronously.
func until(t *testing.T, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
	}
}

// goroutinesSettle waits until the process runs at most slack goroutines more
// than it did at base (from goroutineBase); on failure it logs the stacks of
// both moments, so that a leak names itself.
func goroutinesSettle(t *testing.T, base goroutineSnapshot, slack int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() > base.n+slack; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			now := goroutineSnapshotNow()
			t.Fatalf("%d goroutines, %d at the start (slack %d)\n--- at the start:\n%s\n--- now:\n%s", now.n, base.n, slack, base.stacks, now.stacks)
		}
	}
}

type goroutineSnapshot struct {
	n      int
	stacks string
}

// goroutineBase waits for the count to hold still for 100 ms (at most two
// seconds), so that goroutines the edge is still starting or ending are
// not counted as the test's, then takes it.
func goroutineBase() goroutineSnapshot {
	n, same := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(2 * time.Second); same < 4 && time.Now().Before(deadline); {
		time.Sleep(25 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return goroutineSnapshotNow()
}

func goroutineSnapshotNow() goroutineSnapshot {
	var b strings.Builder
	n := runtime.NumGoroutine()
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return goroutineSnapshot{n: n, stacks: b.String()}
}

func TestServerTerminatesTLSRedirectsHTTPAndServesChallenges(t *testing.T) {
	eachPath(t, testServerTerminatesTLSRedirectsHTTPAndServesChallenges)
}

func testServerTerminatesTLSRedirectsHTTPAndServesChallenges(t *testing.T, path string) {
	w := newWorld(t, testdb.NewURL(t))
	ctx := context.Background()
	v1 := w.deploy(ctx)
	s := serve(t, w, config.Edge{DataPath: path}, newFakeCerts(t))
	host := w.slug + ".zeitwork.test"
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: host}}}

	until(t, func() bool {
		resp, body := do(t, httpsClient, "https://"+s.https+"/", host)
		return resp.StatusCode == 200 && body == v1.String()
	})
	resp, _ := do(t, httpsClient, "https://"+s.https+"/", host)
	if got := resp.Header.Get("X-Seen-Forwarded"); got != "127.0.0.1 https" || resp.ProtoMajor != 1 {
		t.Fatalf("app saw forwarded %q over TLS (%s)", got, resp.Proto)
	}
	// Browsers speak HTTP/2.
	h2Client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: host}, ForceAttemptHTTP2: true}}
	defer h2Client.CloseIdleConnections()
	resp, body := do(t, h2Client, "https://"+s.https+"/", host)
	if got := resp.Header.Get("X-Seen-Forwarded"); got != "127.0.0.1 https" || resp.ProtoMajor != 2 || body != v1.String() {
		t.Fatalf("HTTP/2: app saw forwarded %q (%s): %q", got, resp.Proto, body)
	}

	resp, _ = do(t, noRedirects, "http://"+s.http+"/path?q=1", strings.ToUpper(host)+":80")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://"+host+"/path?q=1" {
		t.Fatalf("plain HTTP: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := do(t, noRedirects, "http://"+s.http+"/", "unknown.zeitwork.test"); resp.StatusCode != 404 {
		t.Fatalf("unknown host on HTTP: %d", resp.StatusCode)
	}
	// ACME HTTP-01 challenges are answered on plain HTTP for any name.
	if resp, body := do(t, noRedirects, "http://"+s.http+"/.well-known/acme-challenge/tok", "new.customer.test"); resp.StatusCode != 200 || body != "tok.key-authorization" {
		t.Fatalf("challenge: %d %q", resp.StatusCode, body)
	}

	// Metrics: requests and latency per project. A request is counted after
	// its response is written, so the last ones may land a moment later.
	wantMetrics := []string{
		`zeitwork_edge_requests_total{code="200",project="` + w.project.String() + `"}`,
		`zeitwork_edge_request_duration_seconds_bucket{project="` + w.project.String() + `",le="0.1"}`,
		`zeitwork_edge_requests_total{code="404",project=""} `,
		"zeitwork_edge_route_hosts 2", // the project and its deployment
	}
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, metrics := do(t, http.DefaultClient, "http://"+s.metrics+"/metrics", "")
		missing = missing[:0]
		for _, want := range wantMetrics {
			if !strings.Contains(metrics, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("metrics lack %s", m)
	}
}

func TestServerBehindCloudflareTrustsOnlyItsRanges(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		v1 := w.deploy(context.Background())
		host := w.slug + ".zeitwork.test"
		for _, tc := range []struct {
			trusted string
			want    string
		}{
			{"127.0.0.0/8", "203.0.113.9 https"},
			{"173.245.48.0/20", "127.0.0.1 http"}, // the peer is not Cloudflare: its headers are lies
		} {
			s := serve(t, w, config.Edge{DataPath: path, CloudflareFronted: true, TrustedProxies: []netip.Prefix{netip.MustParsePrefix(tc.trusted)}}, nil)
			until(t, func() bool {
				resp, body := do(t, noRedirects, "http://"+s.http+"/", host, "CF-Connecting-IP", "203.0.113.9", "X-Forwarded-Proto", "https")
				return resp.StatusCode == 200 && body == v1.String() && resp.Header.Get("X-Seen-Forwarded") == tc.want
			})
		}
	})
}

// An idle keep-alive connection is closed after IdleTimeout, on both data
// paths: otherwise each one holds a goroutine and a socket for as long as
// the client likes.
func TestServerClosesIdleConnections(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		v1 := w.deploy(context.Background())
		s := serve(t, w, config.Edge{DataPath: path, IdleTimeout: 300 * time.Millisecond}, nil)
		host := w.slug + ".zeitwork.test"
		until(t, func() bool {
			resp, body := do(t, noRedirects, "http://"+s.http+"/", host)
			return resp.StatusCode == 200 && body == v1.String()
		})

		c, err := net.Dial("tcp", s.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := keepAliveRequest(t, c, host)
		// Nothing more is sent: the edge closes the connection. The
		// deadline only ends a broken test.
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("idle connection: read %d bytes, err %v; want it closed (EOF)", n, err)
		}
	})
}

// keepAliveRequest asks for / on c and reads the answer, which must keep
// the connection open; the reader holds what the edge sends next.
func keepAliveRequest(t *testing.T, c net.Conn, host string) *bufio.Reader {
	t.Helper()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("keep-alive request: %d, close=%v", resp.StatusCode, resp.Close)
	}
	return br
}

func TestServerCutsOffSlowAndOversizedClients(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		s := serve(t, w, config.Edge{DataPath: path, ReadHeaderTimeout: 300 * time.Millisecond}, nil)

		huge, _ := net.Dial("tcp", s.http)
		defer huge.Close()
		io.WriteString(huge, "GET / HTTP/1.1\r\nHost: a.zeitwork.test\r\nX-Big: "+strings.Repeat("a", 200<<10)+"\r\n\r\n")
		status, _ := bufio.NewReader(huge).ReadString('\n')
		if !strings.Contains(status, "431") {
			t.Fatalf("oversized headers: %q", status)
		}

		base := goroutineBase()
		var conns []net.Conn
		for range 50 {
			c, err := net.Dial("tcp", s.http)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.zeitwork.test\r\nX-Slow: ") // and never finish
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadAll(c); err != nil {
				t.Fatalf("slow client not cut off: %v", err)
			}
			c.Close()
		}
		goroutinesSettle(t, base, 5)
	})
}

// Over TLS too, a client is cut off when it stalls in the handshake or in
// its request head, or idles on a keep-alive connection: each holds a
// goroutine and a socket otherwise.
func TestServerTLSCutsOffSlowAndIdleClients(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		v1 := w.deploy(context.Background())
		s := serve(t, w, config.Edge{DataPath: path, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, newFakeCerts(t))
		host := w.slug + ".zeitwork.test"
		tlsCfg := &tls.Config{InsecureSkipVerify: true, ServerName: host}
		httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		until(t, func() bool {
			resp, body := do(t, httpsClient, "https://"+s.https+"/", host)
			return resp.StatusCode == 200 && body == v1.String()
		})
		httpsClient.CloseIdleConnections()

		// The idle client's request goes to a random instance, and may open
		// upstream connections that stay pooled (six goroutines along the
		// way to the app): made before counting, they are not counted.
		idle, err := tls.Dial("tcp", s.https, tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		br := keepAliveRequest(t, idle, host)

		base := goroutineBase()
		var conns []net.Conn
		for i := range 40 {
			if i%2 == 0 { // silent after connecting: no handshake
				c, err := net.Dial("tcp", s.https)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				continue
			}
			if i%4 == 3 { // after the handshake, a record never finished
				raw, err := net.Dial("tcp", s.https)
				if err != nil {
					t.Fatal(err)
				}
				c := tls.Client(raw, tlsCfg)
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				raw.Write([]byte{23, 3, 3, 0, 100, 1, 2, 3})
				conns = append(conns, raw)
				continue
			}
			c, err := tls.Dial("tcp", s.https, tlsCfg) // a request head never finished
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\nX-Slow: ")
			conns = append(conns, c)
		}
		conns = append(conns, idle)
		// The deadline only ends a broken test.
		for i, c := range conns {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			var r io.Reader = c
			if c == idle {
				r = br
			}
			_, err := io.ReadAll(r)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("client %d of %d not cut off", i, len(conns))
			}
			c.Close()
		}
		goroutinesSettle(t, base, 5)
	})
}
