package nodeproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const token = "cluster-secret"

type fixture struct {
	proxy     *httptest.Server
	instances map[uuid.UUID]nodeproxy.Target
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{instances: map[uuid.UUID]nodeproxy.Target{}}
	p := nodeproxy.New(token, func(_ context.Context, id uuid.UUID) (nodeproxy.Target, bool) {
		tg, ok := f.instances[id]
		return tg, ok
	}, nil, zlog.Discard())
	f.proxy = httptest.NewServer(p)
	t.Cleanup(f.proxy.Close)
	return f
}

// instance starts an app server and registers it as a healthy instance.
func (f *fixture) instance(t *testing.T, h http.Handler) uuid.UUID {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	iid := id.New()
	f.instances[iid] = nodeproxy.Target{Addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), Healthy: true}
	return iid
}

func (f *fixture) request(t *testing.T, method, path string, instance uuid.UUID, tok string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.proxy.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "app.example.com"
	req.Header.Set(nodeproxy.HeaderInstance, instance.String())
	req.Header.Set(nodeproxy.HeaderToken, tok)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Authorization", "Bearer the-users-own-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func errorOf(t *testing.T, resp *http.Response) httpapi.ErrorBody {
	t.Helper()
	var eb httpapi.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		t.Fatalf("error body: %v", err)
	}
	return eb
}

func TestForwardsToTheNamedInstanceOnly(t *testing.T) {
	f := newFixture(t)
	seen := make(chan *http.Request, 1)
	a := f.instance(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		fmt.Fprint(w, "A")
	}))
	f.instance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "B") }))

	resp := f.request(t, "GET", "/path?q=1", a, token, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "A" {
		t.Fatalf("got %d %q, want instance A's answer", resp.StatusCode, body)
	}
	r := <-seen
	if r.Header.Get(nodeproxy.HeaderToken) != "" || r.Header.Get(nodeproxy.HeaderInstance) != "" {
		t.Fatalf("internal headers reached the app: %v", r.Header)
	}
	if r.Host != "app.example.com" || r.URL.RequestURI() != "/path?q=1" {
		t.Fatalf("app saw host %q uri %q", r.Host, r.URL.RequestURI())
	}
	if got := r.Header.Get("X-Forwarded-For"); got != "203.0.113.9" {
		t.Fatalf("X-Forwarded-For = %q, want the edge's value unchanged", got)
	}
	if r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("Authorization") != "Bearer the-users-own-token" {
		t.Fatalf("app lost headers: %v", r.Header)
	}
}

func TestRefusesWithoutTheToken(t *testing.T) {
	f := newFixture(t)
	called := false
	a := f.instance(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	for _, tok := range []string{"", "wrong", token + "x"} {
		resp := f.request(t, "GET", "/", a, tok, nil)
		if resp.StatusCode != 401 || errorOf(t, resp).Code != "unauthorized" {
			t.Fatalf("token %q: status %d", tok, resp.StatusCode)
		}
	}
	if called {
		t.Fatal("an unauthenticated request reached the instance")
	}
}

func TestGoneUnhealthyAndDeadInstances(t *testing.T) {
	f := newFixture(t)
	if resp := f.request(t, "GET", "/", id.New(), token, nil); resp.StatusCode != 502 || errorOf(t, resp).Code != "instance_gone" {
		t.Fatalf("unknown instance: %d", resp.StatusCode)
	}
	sick := f.instance(t, http.NotFoundHandler())
	tg := f.instances[sick]
	tg.Healthy = false
	f.instances[sick] = tg
	if resp := f.request(t, "GET", "/", sick, token, nil); resp.StatusCode != 503 {
		t.Fatalf("unhealthy instance: %d", resp.StatusCode)
	}

	// An instance whose process died: nothing listens on its port.
	dead := id.New()
	f.instances[dead] = nodeproxy.Target{Addr: netip.MustParseAddrPort(testenv.RefusedAddr(t)), Healthy: true}
	if resp := f.request(t, "GET", "/", dead, token, nil); resp.StatusCode != 502 || errorOf(t, resp).Code != "instance_unreachable" {
		t.Fatalf("dead instance: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", f.proxy.URL, nil)
	req.Header.Set(nodeproxy.HeaderToken, token)
	req.Header.Set(nodeproxy.HeaderInstance, "not-a-uuid")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed instance id: %d", resp.StatusCode)
	}
}

func TestStreamsResponsesAndRequestBodies(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	a := f.instance(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d bytes\n", n)
		w.(http.Flusher).Flush()
		<-release // the rest comes later, as with server-sent events
		fmt.Fprint(w, "done\n")
	}))
	upload := strings.NewReader(strings.Repeat("x", 5<<20))
	resp := f.request(t, "POST", "/upload", a, token, upload)
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != fmt.Sprintf("got %d bytes\n", 5<<20) {
			t.Fatalf("first chunk = %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first chunk was held back until the response ended")
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "done\n" {
		t.Fatalf("rest = %q", rest)
	}
}

func TestWebsocketUpgradePassesThrough(t *testing.T) {
	f := newFixture(t)
	a := f.instance(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		// Echo raw bytes: enough to prove a full-duplex tunnel.
		io.Copy(conn, rw) //nolint:errcheck
	}))

	conn, err := net.Dial("tcp", strings.TrimPrefix(f.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n%s: %s\r\n%s: %s\r\n\r\n",
		nodeproxy.HeaderInstance, a, nodeproxy.HeaderToken, token)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"ping 1\n", "ping 2\n"} {
		fmt.Fprint(conn, msg)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
}

func TestReusesUpstreamConnections(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	conns := make(chan struct{}, 100)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	iid := id.New()
	f.instances[iid] = nodeproxy.Target{Addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), Healthy: true}

	for range 20 {
		resp := f.request(t, "GET", "/", iid, token, nil)
		io.Copy(io.Discard, resp.Body) //nolint:errcheck
		resp.Body.Close()
	}
	if n := len(conns); n != 1 {
		t.Fatalf("20 sequential requests opened %d upstream connections, want 1 kept alive", n)
	}
}
