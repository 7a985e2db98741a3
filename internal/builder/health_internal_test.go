package builder

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/version"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// The builder's health is what a rollout waits for after restarting it:
// 503 until its queue is worked, 200 while its database answers, 503 once
// it does not.
func TestHealthAnswersOnlyWhileTheBuilderWorks(t *testing.T) {
	pool := testdb.Pool(t, testdb.NewURL(t))
	h := &health{pool: pool, builderID: "build-1"}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func() (int, HealthBody) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b HealthBody
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if code, b := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(b.Status, "starting") {
		t.Fatalf("before the queue is worked: %d %+v", code, b)
	}
	h.working.Store(true)
	if code, b := get(); code != http.StatusOK || b.Status != "ok" || b.Version != version.Version || b.BuilderID != "build-1" {
		t.Fatalf("working: %d %+v", code, b)
	}
	pool.Close()
	if code, b := get(); code != http.StatusServiceUnavailable || !strings.Contains(b.Status, "database") {
		t.Fatalf("without its database: %d %+v", code, b)
	}
}

func TestHealthAddressTakenFailsTheStartNamingTheVariable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = serveHealth(ctx, ln.Addr().String(), &health{}, zlog.Discard())
	if err == nil || !strings.HasPrefix(err.Error(), "BUILDER_HEALTH_ADDR: ") {
		t.Fatalf("serveHealth on a taken address: %v", err)
	}
}
