package runtime

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A response whose body stops mid-way fails with ErrRegistryStalled; one
// that keeps trickling is read to the end however long it takes in all.
func TestRegistryClientCutsStalledBodiesOnly(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusOK)
		switch r.URL.Path {
		case "/stall":
			w.Write([]byte("abc"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/trickle":
			for range 10 {
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(60 * time.Millisecond)
			}
		}
	}))
	defer srv.Close()
	c := registryClient(400 * time.Millisecond)

	resp, err := c.Get(srv.URL + "/trickle")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "xxxxxxxxxx" {
		t.Fatalf("trickling body: %q, %v", b, err)
	}

	resp, err = c.Get(srv.URL + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, ErrRegistryStalled) || string(b) != "abc" {
		t.Fatalf("stalled body: %q, %v; want abc then ErrRegistryStalled", b, err)
	}
}
