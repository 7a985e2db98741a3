package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDirectForwardsHTTP2AndHandOvers: the requests net/http parses on the
// edge's own data paths (HTTP/2, and HTTP/1 connections the fast path
// handed over) are forwarded by the direct exchange, except those it
// leaves to ReverseProxy, and the app sees the same either way.
func TestDirectForwardsHTTP2AndHandOvers(t *testing.T) {
	forEachH2Path(t, testDirectForwardsHTTP2AndHandOvers)
}

func testDirectForwardsHTTP2AndHandOvers(t *testing.T, path string) {
	s := newStage(t, path, 5*time.Second)
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s len=%d secret=%q xfp=%s rid=%t", r.Method, r.URL.RequestURI(), len(b),
			r.Header.Get("X-Secret"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get(HeaderRequestID) != "")
	}))
	client := clientOf(t, s.edge)
	do := func(method, path string, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.edge.URL+path, strings.NewReader(body))
		req.Host = "shop.zeitwork.app"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s: answered over %s", method, path, resp.Proto)
		}
		return resp, string(b)
	}
	for i, tc := range []struct {
		method, path, body, want string
		direct                   bool
	}{
		{"GET", "/a?b=c", "", `GET /a?b=c len=0 secret="" xfp=https rid=true`, true},
		{"POST", "/form", strings.Repeat("x", 1000), `POST /form len=1000 secret="" xfp=https rid=true`, true},
		// Larger than the edge holds in memory: streamed by ReverseProxy.
		{"PUT", "/upload", strings.Repeat("y", 100<<10), `PUT /upload len=102400 secret="" xfp=https rid=true`, false},
		{"HEAD", "/", "", "", true},
	} {
		// On the loop path, a request without a body is served by the
		// event loop itself (h2_native.go).
		native := path == pathLoopH2 && tc.body == ""
		before, beforeNative := s.proxy.direct.Load(), s.onLoopH2()
		resp, body := do(tc.method, tc.path, tc.body)
		if resp.StatusCode != 200 || body != tc.want || resp.Header.Get(HeaderRequestID) == "" {
			t.Fatalf("%d: %d %q", i, resp.StatusCode, body)
		}
		if got := s.proxy.direct.Load() - before; got != map[bool]int64{true: 1}[tc.direct && !native] {
			t.Fatalf("%d: %s %s: %d requests went through the direct exchange", i, tc.method, tc.path, got)
		}
		if got := s.onLoopH2() - beforeNative; got != map[bool]int64{true: 1}[native] {
			t.Fatalf("%d: %s %s: %d requests served on the event loop", i, tc.method, tc.path, got)
		}
	}

	// HTTP/1.0 is handed over by the fast path; the fields Connection
	// names are hop-by-hop and stay at the edge.
	c, err := dialEdge(t, s.edge)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := s.proxy.direct.Load()
	io.WriteString(c, "GET /old HTTP/1.0\r\nHost: shop.zeitwork.app\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if want := `GET /old len=0 secret="" xfp=https rid=true`; resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("HTTP/1.0: %d %q, want %q", resp.StatusCode, b, want)
	}
	if s.proxy.direct.Load() != before+1 {
		t.Fatal("the handed-over HTTP/1.0 request did not go through the direct exchange")
	}
}

// TestProxyAbortsResponsesTheAppCutShort: a response whose body breaks off
// reaches the client as an error, never as a complete response, on every
// path (over HTTP/2 a reset stream, over HTTP/1 a closed connection).
func TestProxyAbortsResponsesTheAppCutShort(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, 5*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/length" {
				w.Header().Set("Content-Length", "100")
			}
			io.WriteString(w, "the first part")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the app's server drops the connection
		}))
		for _, p := range []string{"/length", "/chunked"} {
			req, _ := http.NewRequest("GET", s.edge.URL+p, nil)
			req.Host = "shop.zeitwork.app"
			resp, err := clientOf(t, s.edge).Do(req)
			if err != nil {
				continue // cut before the head: also an error
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("%s: a cut response read as complete: %d %q", p, resp.StatusCode, b)
			}
		}
	})
}

// TestProxyLetsGoOfAStreamTheClientLeft: a client that stops reading a
// quiet stream (server-sent events) and goes is noticed: the app's request
// ends, as it does when the client talks to it directly. (The fast path
// on HTTP/1.1 does not watch the client while it waits for the app: there
// it is noticed at the next event.)
func TestProxyLetsGoOfAStreamTheClientLeft(t *testing.T) {
	for _, path := range []string{DataPathStdlib, pathH2, pathLoopH2} {
		t.Run(path, func(t *testing.T) {
			s := newStage(t, path, 5*time.Second)
			left, over := make(chan struct{}), make(chan struct{})
			s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: hello\n\n")
				w.(http.Flusher).Flush()
				select { // nothing more to say until the client goes
				case <-r.Context().Done():
					close(left)
				case <-over:
				}
			}))
			t.Cleanup(func() { close(over) }) // before the app's server closes: a failed test ends
			req, _ := http.NewRequest("GET", s.edge.URL+"/events", nil)
			req.Host = "shop.zeitwork.app"
			resp, err := clientOf(t, s.edge).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: hello\n" {
				t.Fatalf("first event %q, %v", line, err)
			}
			resp.Body.Close() // HTTP/2: RST_STREAM(CANCEL)
			select {
			case <-left:
			case <-time.After(10 * time.Second):
				t.Fatal("the app's request outlived the client")
			}
		})
	}
}

// TestProxyLetsGoOfARequestTheClientLeft: a client that leaves while the
// app is still working on its request (no response head yet) has the edge
// close the node-proxy connection, so the app's request ends then, not at
// the upstream timeout. On the event loops the edge sees the close as
// nginx does; over HTTP/2 the client resets the stream, and the direct
// exchange's watch on the request's context acts; the goroutine paths
// (fast, HTTP/1.1 over TLS) watch the client once the wait has gone on
// for hangupAfter; the stdlib path is the reference.
func TestProxyLetsGoOfARequestTheClientLeft(t *testing.T) {
	for _, name := range []string{DataPathStdlib, DataPathLoop, pathH2, pathLoopH2, "handed over", DataPathFast, pathTLS, pathLoopTLS} {
		t.Run(name, func(t *testing.T) {
			// HTTP/1.0 is handed to net/http by the loop, and its requests
			// go through the direct exchange, watching the request's context.
			path, proto := name, "HTTP/1.1"
			if name == "handed over" {
				path, proto = DataPathLoop, "HTTP/1.0"
			}
			s := newStage(t, path, time.Minute)
			s.proxy.hangupAfter.Store(int64(50 * time.Millisecond))
			got, left, over := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var hits atomic.Int32
			s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/warm" {
					time.Sleep(100 * time.Millisecond) // a long wait, watched, answered
					io.WriteString(w, "warm")
					return
				}
				if hits.Add(1) > 1 {
					return // tried again: counted below
				}
				close(got)
				select { // no answer until the client goes
				case <-r.Context().Done():
					close(left)
				case <-over:
				}
			}))
			t.Cleanup(func() { close(over) })
			var leave func()
			if isH2(path) {
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "GET", s.edge.URL+"/slow", nil)
				req.Host = "shop.zeitwork.app"
				go clientOf(t, s.edge).Do(req)
				leave = cancel // RST_STREAM(CANCEL)
			} else {
				c, err := dialEdge(t, s.edge)
				if err != nil {
					t.Fatal(err)
				}
				if proto == "HTTP/1.1" {
					// A long wait first, on the same connection: the watch
					// must let go of it and take it again.
					io.WriteString(c, "GET /warm HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n")
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatal(err)
					}
					if b, _ := io.ReadAll(resp.Body); string(b) != "warm" {
						t.Fatalf("warm-up: %d %q", resp.StatusCode, b)
					}
				}
				io.WriteString(c, "GET /slow "+proto+"\r\nHost: shop.zeitwork.app\r\n\r\n")
				leave = func() { c.Close() }
			}
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the app")
			}
			leave()
			select {
			case <-left:
			case <-time.After(10 * time.Second):
				t.Fatal("the app's request outlived the client")
			}
			time.Sleep(100 * time.Millisecond) // room for a retry that must not come
			if n := hits.Load(); n != 1 {
				t.Fatalf("the app got the request %d times: a client that left was tried again", n)
			}
			if name == "handed over" && s.proxy.direct.Load() != 1 {
				t.Fatalf("%d requests went through the direct exchange, want the one handed over", s.proxy.direct.Load())
			}
		})
	}
}

// TestProxyAnswersALongWaitTheClientStayedFor: a response head that takes
// longer than hangupAfter still reaches a client that stays, and the
// connection serves a second such request (the watch was let go of
// cleanly, and armed again), on every path.
func TestProxyAnswersALongWaitTheClientStayedFor(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		s := newStage(t, path, time.Minute)
		s.proxy.hangupAfter.Store(int64(20 * time.Millisecond))
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(150 * time.Millisecond)
			io.WriteString(w, "worth the wait "+r.URL.Path)
		}))
		for _, p := range []string{"/one", "/two"} {
			resp, body := s.get("shop.zeitwork.app", p)
			if resp.StatusCode != 200 || body != "worth the wait "+p {
				t.Fatalf("%s: %d %q", p, resp.StatusCode, body)
			}
		}
	})
}
