package webhook_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/webhook"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func TestDeliveriesAreLimitedPerInstallation(t *testing.T) {
	f := newFixture(t)
	now := time.Date(2031, 1, 1, 9, 0, 30, 0, time.UTC)
	q, err := queue.New(f.pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := webhook.New(f.pool, q, secret, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rc.LimitInstallations(&ratelimit.Limiter{DB: f.pool, Now: func() time.Time { return now }}, ratelimit.Limit{Max: 2, Per: time.Minute})
	f.h = rc.Handler()

	push := func(n int) []byte {
		return pushPayload("refs/heads/main", strings.Repeat(string(rune('a'+n)), 40), "commit")
	}
	result(t, f.send("push", push(0)), http.StatusOK)
	result(t, f.send("push", push(1)), http.StatusOK)
	// A forged delivery is refused for its signature, before it is counted.
	if w := f.do("forged", "push", "sha256="+strings.Repeat("0", 64), push(2)); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged: %d %s", w.Code, w.Body)
	}
	before := f.deliveries()
	w := f.send("push", push(2))
	var body struct{ Code string }
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "30" || body.Code != "rate_limited" {
		t.Fatalf("third push: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if f.deliveries() != before || f.deployments() != 2 {
		t.Fatalf("a refused delivery was recorded: %d deliveries, %d deployments", f.deliveries(), f.deployments())
	}

	// Another installation has its own count; a delivery naming none (the
	// App's ping) is not counted.
	other, _ := json.Marshal(map[string]any{"zen": "Keep it simple.", "hook_id": 1, "installation": map[string]any{"id": 999}})
	result(t, f.send("ping", other), http.StatusOK)
	for range 3 {
		result(t, f.send("ping", []byte(`{"zen":"Design for failure.","hook_id":1}`)), http.StatusOK)
	}

	// The next window takes the refused push (redelivered with its id).
	now = now.Add(30 * time.Second)
	if res := result(t, f.deliver("delivery-"+"3", "push", push(2)), http.StatusOK); len(res.Deployments) != 1 {
		t.Fatalf("after the window: %+v", res)
	}
}
