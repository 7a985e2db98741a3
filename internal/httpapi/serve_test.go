package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/httpapi"
)

// Serve lets a request in flight finish when ctx ends, and then returns
// nil; the listener is closed afterwards.
func TestServeDrainsRequestsInFlightOnShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inside)
		<-release
		io.WriteString(w, "finished")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpapi.Serve(ctx, srv, l, 30*time.Second) }()

	body := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + l.Addr().String())
		if err != nil {
			body <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()
	<-inside
	cancel()
	close(release)
	if got := <-body; got != "finished" {
		t.Fatalf("request in flight at shutdown got %q, want it to finish", got)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after ctx ended = %v, want nil", err)
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Serve returned")
	}
}

// A listener that fails is Serve's error, without waiting for ctx.
func TestServeReturnsAListenerFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := httpapi.Serve(context.Background(), &http.Server{}, l, time.Second); err == nil {
		t.Fatal("Serve on a closed listener = nil, want its error")
	}
}

// A client that connected before the shutdown and sends its request after
// it began is answered: with the socket kept by systemd across a restart,
// it is a client of this process, not of the next one. (net/http's own
// Shutdown closes such a connection unanswered.)
func TestServeAnswersAConnectionAcceptedBeforeShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "answered") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted <- struct{}{}
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpapi.Serve(ctx, srv, l, 30*time.Second) }()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	cancel()
	// The shutdown began once the listener is closed.
	for {
		probe, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			break
		}
		probe.Close()
		time.Sleep(time.Millisecond)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a request sent after the shutdown began on a connection accepted before: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "answered" || !resp.Close {
		t.Errorf("got %d %q (close %v), want 200 answered and the connection closed after", resp.StatusCode, body, resp.Close)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}
