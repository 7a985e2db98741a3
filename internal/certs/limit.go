package certs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBusy: more names than DecisionLimits allow were asked about; the
// handshake fails and the client may try again.
var ErrBusy = errors.New("too many names to decide on; try again shortly")

// DecisionLimits keep handshakes from driving database queries. Anyone
// can open a TLS connection with any server name; without limits, every
// handshake with a random name is a query for a verified domain.
type DecisionLimits struct {
	// Rate (names per second) and Burst bound how often Allow is asked.
	// Names beyond are refused with ErrBusy without asking: a flood of
	// random names cannot take the database with it, at the price of a
	// failed handshake (retried) for a real name during the flood.
	Rate  float64
	Burst int
	// NegativeTTL is how long a name Allow said nobody added
	// (ErrUnknownName) is refused again without asking. A name added and
	// verified meanwhile waits at most this long for its certificate; a
	// pending name is not remembered, since it may be verified any moment.
	NegativeTTL time.Duration
	// MaxNegative bounds the names remembered; when full, the expired ones
	// go, then all (the rate limit still holds).
	MaxNegative int
}

// Defaults for DecisionLimits' zero values.
const (
	DefaultDecisionRate  = 20
	DefaultDecisionBurst = 50
	DefaultNegativeTTL   = time.Minute
	DefaultMaxNegative   = 100_000
)

func (l DecisionLimits) withDefaults() DecisionLimits {
	if l.Rate <= 0 {
		l.Rate = DefaultDecisionRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultDecisionBurst
	}
	if l.NegativeTTL <= 0 {
		l.NegativeTTL = DefaultNegativeTTL
	}
	if l.MaxNegative <= 0 {
		l.MaxNegative = DefaultMaxNegative
	}
	return l
}

// limitedDecision asks inner within limits: a negative cache, then a token
// bucket.
type limitedDecision struct {
	inner  Decision
	limits DecisionLimits
	now    func() time.Time // time.Now; tests freeze it

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	refused map[string]time.Time // name → refused until
}

func newLimitedDecision(inner Decision, limits DecisionLimits) *limitedDecision {
	limits = limits.withDefaults()
	return &limitedDecision{inner: inner, limits: limits, now: time.Now, tokens: float64(limits.Burst), refused: map[string]time.Time{}}
}

func (l *limitedDecision) decide(ctx context.Context, name string) error {
	now := l.now()
	l.mu.Lock()
	if until, ok := l.refused[name]; ok {
		if now.Before(until) {
			l.mu.Unlock()
			return fmt.Errorf("%s: %w (refused recently)", name, ErrNotVerified)
		}
		delete(l.refused, name)
	}
	ok := l.take(now)
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", name, ErrBusy)
	}
	err := l.inner(ctx, name)
	// Only the database's "nobody added it" is remembered; its errors
	// are not answers.
	if errors.Is(err, ErrUnknownName) {
		l.mu.Lock()
		l.remember(name, now)
		l.mu.Unlock()
	}
	return err
}

// take spends a token if there is one. Callers hold l.mu.
func (l *limitedDecision) take(now time.Time) bool {
	if !l.last.IsZero() && now.After(l.last) {
		l.tokens = min(float64(l.limits.Burst), l.tokens+now.Sub(l.last).Seconds()*l.limits.Rate)
	}
	if now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// remember refuses name until NegativeTTL from now. Callers hold l.mu.
func (l *limitedDecision) remember(name string, now time.Time) {
	if len(l.refused) >= l.limits.MaxNegative {
		for n, until := range l.refused {
			if !now.Before(until) {
				delete(l.refused, n)
			}
		}
		if len(l.refused) >= l.limits.MaxNegative {
			clear(l.refused)
		}
	}
	l.refused[name] = now.Add(l.limits.NegativeTTL)
}
