package ratelimit_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// clock is a settable clock shared by limiters, as NTP makes it across
// API processes.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLimitHoldsAcrossLimitersAndRecoversNextWindow(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	c := &clock{now: time.Date(2030, 1, 1, 12, 0, 10, 0, time.UTC)}
	// Two API processes on one database.
	a, b := &ratelimit.Limiter{DB: pool, Now: c.Now}, &ratelimit.Limiter{DB: pool, Now: c.Now}
	lim := ratelimit.Limit{Max: 3, Per: time.Minute}

	for i, l := range []*ratelimit.Limiter{a, b, a} {
		if err := l.Allow(ctx, "signin:ip:192.0.2.1", lim); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := b.Allow(ctx, "signin:ip:192.0.2.1", lim)
	ex, ok := ratelimit.IsExceeded(err)
	if !ok || ex.RetryAfter != 50*time.Second || ex.Seconds() != "50" {
		t.Fatalf("fourth request: %v", err)
	}
	// Another subject, and another limit's key, have their own counts.
	if err := a.Allow(ctx, "signin:ip:192.0.2.2", lim); err != nil {
		t.Fatal(err)
	}
	if err := a.Allow(ctx, "token:user:x", lim); err != nil {
		t.Fatal(err)
	}

	// Refused requests count, so hammering stays refused until the window ends.
	c.Add(49 * time.Second)
	if _, ok := ratelimit.IsExceeded(a.Allow(ctx, "signin:ip:192.0.2.1", lim)); !ok {
		t.Fatal("allowed before the window ended")
	}
	c.Add(time.Second)
	if err := b.Allow(ctx, "signin:ip:192.0.2.1", lim); err != nil {
		t.Fatalf("next window: %v", err)
	}

	// Pruning drops the windows that are over.
	n, err := a.Prune(ctx, c.Now())
	if err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want the first window's 3 keys", n, err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM rate_limit_counters`).Scan(&left); err != nil || left != 1 {
		t.Fatalf("%d counters left, %v", left, err)
	}
}

func TestConcurrentRequestsAreCountedExactly(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	lim := ratelimit.Limit{Max: 10, Per: time.Hour}
	now := func() time.Time { return time.Date(2030, 1, 1, 0, 30, 0, 0, time.UTC) }
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		allowed  int
		failures []error
	)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &ratelimit.Limiter{DB: pool, Now: now}
			err := l.Allow(ctx, "webhook:installation:1", lim)
			mu.Lock()
			defer mu.Unlock()
			if _, ok := ratelimit.IsExceeded(err); !ok && err != nil {
				failures = append(failures, err)
			} else if err == nil {
				allowed++
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 || allowed != 10 {
		t.Fatalf("allowed %d of 40 (want 10); errors %v", allowed, failures)
	}
}

func TestNilLimiterAndOffLimitAllow(t *testing.T) {
	var l *ratelimit.Limiter
	if err := l.Allow(context.Background(), "k", ratelimit.Limit{Max: 1, Per: time.Second}); err != nil {
		t.Fatal(err)
	}
	// An off limit never reaches the (absent) database.
	if err := (&ratelimit.Limiter{}).Allow(context.Background(), "k", ratelimit.Limit{}); err != nil {
		t.Fatal(err)
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]ratelimit.Limit{
		"30/1m":    {Max: 30, Per: time.Minute},
		" 1000/1h": {Max: 1000, Per: time.Hour},
		"off":      {},
	} {
		var got ratelimit.Limit
		if err := got.UnmarshalText([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "30", "0/1m", "-1/1m", "30/", "30/1ms", "x/1m", "30/soon", "99999999999/1m"} {
		var got ratelimit.Limit
		if err := got.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q parsed as %+v", bad, got)
		}
	}
}

func TestSubjectCountsIPv6ByItsSlash64(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"::ffff:203.0.113.7":   "203.0.113.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":      "2001:db8:1:3::/64",
	} {
		if got := ratelimit.Subject(netip.MustParseAddr(in)); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
