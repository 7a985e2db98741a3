package cli

import (
	"context"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/webhook"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// The api role's pruner deletes deliveries past their keep at once, keeps
// the recent ones, and returns when its context ends.
func TestPruneWebhooks(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	for _, d := range []struct {
		delivery string
		age      time.Duration
	}{{"old", 8 * 24 * time.Hour}, {"recent", time.Hour}} {
		if _, err := pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, delivery_id, event, payload_sha256, received_at)
			VALUES ($1, $2, 'ping', repeat('0', 64), now() - make_interval(secs => $3))`, id.New(), d.delivery, d.age.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	q, err := queue.New(pool, nil, config.Queue{}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := webhook.New(pool, q, "secret", zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}

	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pruneWebhooks(pctx, rc, time.Hour, webhookKeep, zlog.Discard())
	}()
	left := func() []string {
		rows, err := pool.Query(ctx, `SELECT delivery_id FROM webhook_deliveries ORDER BY delivery_id`)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(left()) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	if got := left(); len(got) != 1 || got[0] != "recent" {
		t.Fatalf("deliveries left after pruning: %v, want [recent]", got)
	}
}
