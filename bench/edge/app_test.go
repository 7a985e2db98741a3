package main

import (
	"io"
	"net/http"
	"os/exec"
	"testing"

	"github.com/zeitwork/zeitwork/internal/testenv"
)

// nginx as the app must answer on every port exactly what the Go backend
// answers, or the two backends would not be measuring the same exchange.
func TestNginxAppAnswersLikeTheGoBackend(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		testenv.Unavailable(t, "nginx", err)
	}
	p, addrs, err := startNginxApp(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	if err := p.alive(); err != nil {
		t.Fatalf("nginx as the app did not stay up: %v", err)
	}
	if len(addrs) != 3 {
		t.Fatalf("%d addresses, want 3", len(addrs))
	}
	seen := map[string]bool{}
	for _, addr := range addrs {
		if seen[addr] {
			t.Fatalf("address %s twice", addr)
		}
		seen[addr] = true
		px := proxy{name: "app", addr: addr, p: p}
		if err := waitServes(t.Context(), px, "any.bench.test"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + addr + "/some/path")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || string(body) != backendBody || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("%s answered %d %q %q; want 200 %q text/plain; charset=utf-8", addr, resp.StatusCode, resp.Header.Get("Content-Type"), body, backendBody)
		}
	}
}
