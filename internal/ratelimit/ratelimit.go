// Package ratelimit counts requests in fixed windows kept in Postgres
// (rate_limit_counters), so that a limit holds across every API process
// behind a load balancer: each check is one UPSERT … RETURNING count,
// atomic without locks held across requests.
//
// Fixed windows are coarse (a client can spend a limit at the end of one
// window and again at the start of the next: twice the limit in a short
// burst), which is acceptable for what they guard here: sign-ins, token
// and device-code creation, webhook floods. They cost one row per key and
// window, and old windows are pruned.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/internal/db"
)

// Limit is at most Max requests per window of length Per. The zero value
// (or Max 0) is no limit.
type Limit struct {
	Max int32
	Per time.Duration
}

// Off says whether the limit lets everything through.
func (l Limit) Off() bool { return l.Max <= 0 || l.Per <= 0 }

// String is the limit as configured: "30/1m0s", or "off".
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return fmt.Sprintf("%d/%s", l.Max, l.Per)
}

// UnmarshalText reads "<max>/<duration>" ("30/1m", "1000/1h") or "off",
// for caarlos0/env.
func (l *Limit) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "off" {
		*l = Limit{}
		return nil
	}
	n, per, ok := strings.Cut(s, "/")
	max, err := strconv.ParseInt(n, 10, 32)
	if !ok || err != nil || max < 1 {
		return fmt.Errorf("%q is not <max>/<duration> (e.g. 30/1m) or off", s)
	}
	d, err := time.ParseDuration(per)
	if err != nil || d < time.Second {
		return fmt.Errorf("%q: the window must be a duration of at least 1s", s)
	}
	*l = Limit{Max: int32(max), Per: d}
	return nil
}

// Exceeded is the error of a request over its limit.
type Exceeded struct {
	Key string
	// RetryAfter is when the current window ends, at least a second.
	RetryAfter time.Duration
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("rate limit %s exceeded: retry in %s", e.Key, e.RetryAfter)
}

// Seconds is RetryAfter for a Retry-After header: whole seconds, rounded up.
func (e *Exceeded) Seconds() string {
	return strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds())))
}

// Limiter checks limits against the database. A nil Limiter allows
// everything.
type Limiter struct {
	DB db.Conn
	// Now is the clock; nil is time.Now. Every process must agree on it to
	// within a small part of a window (NTP does).
	Now func() time.Time
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Allow counts one request against key (a limit's name and its subject,
// e.g. "signin:ip:203.0.113.7") and returns an *Exceeded when the window
// already had lim.Max. Refused requests count too, so a client that keeps
// hammering stays refused until the window ends.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) error {
	if l == nil || lim.Off() {
		return nil
	}
	if key == "" || len(key) > 200 { // rate_limit_counters_key_check
		return fmt.Errorf("rate limit key %q: must have 1 to 200 bytes", key)
	}
	now := l.now()
	start := now.Truncate(lim.Per)
	n, err := db.New(l.DB).RateLimitCounterHit(ctx, db.RateLimitCounterHitParams{Key: key, WindowStart: start})
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", key, err)
	}
	if n <= lim.Max {
		return nil
	}
	return &Exceeded{Key: key, RetryAfter: max(start.Add(lim.Per).Sub(now), time.Second)}
}

// IsExceeded returns the *Exceeded in err's chain.
func IsExceeded(err error) (*Exceeded, bool) {
	var e *Exceeded
	ok := errors.As(err, &e)
	return e, ok
}

// Prune deletes the windows that started before before and returns how
// many. Pass now less the longest window in use.
func (l *Limiter) Prune(ctx context.Context, before time.Time) (int64, error) {
	n, err := db.New(l.DB).RateLimitCounterDeleteBefore(ctx, before)
	if err != nil {
		return 0, fmt.Errorf("prune rate limit counters: %w", err)
	}
	return n, nil
}

// Subject is how an address is counted: an IPv4 address alone, an IPv6
// address by its /64, since one host commonly holds a whole /64 and could
// otherwise take a fresh address for every request.
func Subject(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64) // an IPv6 address has a /64
		return p.String()
	}
	return ip.String()
}
