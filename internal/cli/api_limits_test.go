package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// The pruner deletes expired device sign-ins and finished windows at
// once, keeps the live ones, and returns when its context ends.
func TestPruneSignIns(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	for _, stmt := range []string{
		`INSERT INTO device_authorizations (id, device_code_hash, user_code, client_name, expires_at)
		 VALUES ($1, sha256('old'), 'BCDF-GHJK', 'old', now() - interval '1 minute')`,
		`INSERT INTO device_authorizations (id, device_code_hash, user_code, client_name, expires_at)
		 VALUES ($1, sha256('live'), 'BCDF-GHJL', 'live', now() + interval '10 minutes')`,
	} {
		if _, err := pool.Exec(ctx, stmt, id.New()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO rate_limit_counters (key, window_start, count)
		VALUES ('old', now() - interval '2 hours', 3), ('live', now(), 1)`); err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pruneSignIns(pctx, account.Devices{DB: pool}, &ratelimit.Limiter{DB: pool}, time.Hour, time.Hour, zlog.Discard())
	}()
	left := func() string {
		var s string
		if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT string_agg(client_name, ',') FROM device_authorizations), '') || '/' ||
			coalesce((SELECT string_agg(key, ',') FROM rate_limit_counters), '')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for deadline := time.Now().Add(30 * time.Second); left() != "live/live" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	if got := left(); got != "live/live" {
		t.Fatalf("left after pruning: %s, want live/live", got)
	}
}

// The api role reads the limits and the device settings from its
// environment.
func TestAPIRoleAppliesLimitsFromItsEnvironment(t *testing.T) {
	url := testdb.NewURL(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testenv.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- Main(ctx, []string{"api"}, Env{Stdout: io.Discard, Stderr: &stderr, Environ: []string{
			"DATABASE_URL=" + url, "CLUSTER_TOKEN=t", "API_ADDR=127.0.0.1:0", "LOG_FORMAT=text",
			"API_RATE_LIMIT_DEVICE_CODES=1/1h", "API_DEVICE_VERIFICATION_URL=https://dash.example/device", "API_DEVICE_POLL_INTERVAL=7s",
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
	start := func() *http.Response {
		resp, err := http.Post(base+"/v1/auth/device", "application/json", strings.NewReader(`{"client_name":"cli"}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := start()
	var body struct {
		VerificationURI string `json:"verification_uri"`
		Interval        int    `json:"interval"`
	}
	err := json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || body.VerificationURI != "https://dash.example/device" || body.Interval != 7 {
		t.Fatalf("first: %d %+v %v", resp.StatusCode, body, err)
	}
	resp = start()
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("second: %d %v", resp.StatusCode, resp.Header)
	}
}
