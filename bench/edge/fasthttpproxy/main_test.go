package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// rawBackend answers every request with the same short response and
// allocates nothing per request, so allocs/op are the proxy's own (as in
// internal/edge's BenchmarkKeepAliveGET). Each request head it reads is
// sent to heads, if not nil.
func rawBackend(tb testing.TB, heads chan<- string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 23\r\n\r\nhello from the backend\n")
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
						if heads != nil {
							heads <- string(buf[:i])
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

func serve(tb testing.TB, backends ...string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := newServer("shop.bench.test", backends)
	go srv.Serve(l)                       //nolint:errcheck
	tb.Cleanup(func() { srv.Shutdown() }) //nolint:errcheck
	return l.Addr().String()
}

// TestProxyHeaders: what the benchmark calls the edge's per-request header
// work is done — client-address headers replaced, hop-by-hop ones dropped,
// a request id made — and an unknown host is not forwarded.
func TestProxyHeaders(t *testing.T) {
	heads := make(chan string, 1)
	addr := serve(t, rawBackend(t, heads))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: shop.bench.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-Ip: 6.6.6.6\r\nKeep-Alive: timeout=5\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello from the backend\n" || len(resp.Header.Get("X-Request-Id")) != 32 {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
	head := <-heads
	for _, bad := range []string{"6.6.6.6", "Keep-Alive"} {
		if strings.Contains(head, bad) {
			t.Errorf("backend saw %q:\n%s", bad, head)
		}
	}
	for _, want := range []string{"X-Forwarded-For: 127.0.0.1", "X-Forwarded-Host: shop.bench.test", "X-Forwarded-Proto: http", "X-Request-Id: "} {
		if !strings.Contains(head, want) {
			t.Errorf("backend did not see %q:\n%s", want, head)
		}
	}

	io.WriteString(c, "GET / HTTP/1.1\r\nHost: other.bench.test\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 404 || len(heads) != 0 {
		t.Fatalf("unknown host: %d, backend saw %d requests", resp.StatusCode, len(heads))
	}
}

// BenchmarkKeepAliveGET is internal/edge's benchmark of the same name
// through the fasthttp proxy: one keep-alive GET to a backend that
// allocates nothing.
func BenchmarkKeepAliveGET(b *testing.B) {
	var backends []string
	for range 3 {
		backends = append(backends, rawBackend(b, nil))
	}
	c, err := net.Dial("tcp", serve(b, backends...))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: shop.bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
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
