package cli

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestEdgeRoleServesUntilStopped runs the edge as its own database user:
// its route queries need no more than the edge's grants.
func TestEdgeRoleServesUntilStopped(t *testing.T) {
	url := testdb.As(t, testdb.NewURL(t), dbrole.Edge)
	httpAddr, metricsAddr := testenv.ReservedAddr(t), testenv.ReservedAddr(t)
	snapshot := filepath.Join(t.TempDir(), "routes.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errOut testenv.Buffer
	go func() {
		done <- Main(ctx, []string{"edge"}, Env{Environ: []string{
			"DATABASE_URL=" + url, "NODE_PROXY_TOKEN=secret-token", "EDGE_HTTP_ADDR=" + httpAddr, "EDGE_HTTPS_ADDR=off",
			"EDGE_METRICS_ADDR=" + metricsAddr, "EDGE_ROUTES_SNAPSHOT=" + snapshot, "LOG_LEVEL=warn",
		}, Stdout: &out, Stderr: &errOut})
	}()
	get := func(url, host string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, h := get("http://"+httpAddr+"/", "nothing.zeitwork.app")
		if code == 404 && h.Get("X-Zeitwork-Error") == "unknown_host" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge never answered 404 for an unknown host (last %d)\n%s", code, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The first route sync from the database shows in the metrics.
	for {
		code, body, _ := get("http://"+metricsAddr+"/metrics", "")
		if code == 200 && strings.Contains(body, `zeitwork_edge_route_updates_total{result="ok"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %d\n%s\n%s", code, body, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("edge exited %d after stop:\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("edge did not stop")
	}
	if strings.Contains(errOut.String(), "secret-token") {
		t.Fatal("the node-proxy token was logged")
	}
}

func TestEdgeRoleRefusesBadConfig(t *testing.T) {
	code, _, errOut := run(t, []string{"DATABASE_URL=postgres://u:p@h/d", "EDGE_UPSTREAM_TIMEOUT=soon"}, "edge")
	if code != ExitUsage || !strings.Contains(errOut, "NODE_PROXY_TOKEN") || !strings.Contains(errOut, "EDGE_UPSTREAM_TIMEOUT") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// TLS on, with an ACME CA file that does not exist: a clear failure.
	code, _, errOut = run(t, []string{"DATABASE_URL=postgres://u:p@127.0.0.1:1/d", "NODE_PROXY_TOKEN=x", "EDGE_HTTP_ADDR=" + testenv.ReservedAddr(t),
		"EDGE_HTTPS_ADDR=" + testenv.ReservedAddr(t), "EDGE_METRICS_ADDR=off", "ACME_EMAIL=ops@example.com", "ACME_CA_ROOTS=/nonexistent/roots.pem"}, "edge")
	if code == ExitOK || !strings.Contains(errOut, "certificates") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
