package cli

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
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

// The api role mounts the webhook exactly when GITHUB_WEBHOOK_SECRET is
// set, with its queue and receiver composed here.
func TestAPIRoleMountsTheWebhookWithASecret(t *testing.T) {
	for _, secret := range []string{"", "hook-secret"} {
		t.Run("secret="+secret, func(t *testing.T) {
			url := testdb.NewURL(t)
			ctx, cancel := context.WithCancel(context.Background())
			var stderr testenv.Buffer
			exited := make(chan int, 1)
			go func() {
				exited <- Main(ctx, []string{"api"}, Env{Stdout: io.Discard, Stderr: &stderr, Environ: []string{
					"DATABASE_URL=" + url, "CLUSTER_TOKEN=t", "API_ADDR=127.0.0.1:0", "LOG_FORMAT=text", "GITHUB_WEBHOOK_SECRET=" + secret,
				}})
			}()
			defer func() {
				cancel()
				if code := <-exited; code != ExitOK {
					t.Errorf("api exited %d: %s", code, stderr.String())
				}
			}()
			addrRe := regexp.MustCompile(`msg="api running".* addr=(\S+)`)
			var base string
			for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if m := addrRe.FindStringSubmatch(stderr.String()); m != nil {
					base = "http://" + m[1]
				}
			}
			if base == "" {
				t.Fatalf("api did not start: %s", stderr.String())
			}

			resp, err := http.Post(base+"/v1/webhook/github", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusNotFound // not served
			if secret != "" {
				want = http.StatusUnauthorized // served, and unsigned
			}
			if resp.StatusCode != want {
				t.Fatalf("POST /v1/webhook/github: %d, want %d", resp.StatusCode, want)
			}
		})
	}
}
