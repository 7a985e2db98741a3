package httpapi_test

import (
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
