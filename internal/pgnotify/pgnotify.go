// Package pgnotify owns listening for Postgres notifications: every
// component that waits for NOTIFY (the node agent for its instances, the
// edge for routes, a build log's followers) does it through one Listener.
//
// A notification is a hint, never the only way to learn of a change:
// Postgres drops notifications sent while nobody listens, and a listening
// connection can break at any moment. So the Listener also tells its caller
// when it may have missed some (Connected, after every LISTEN, the first
// included) and wakes it on a timer (Poll), listening or not. A caller that
// rechecks everything on those two events, and what a payload names on a
// Notification, never misses a change; notifications only make it prompt.
package pgnotify

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind says what an Event reports.
type Kind int

const (
	// Notification is a NOTIFY on one of the channels.
	Notification Kind = iota
	// Connected says LISTEN is in place on a new connection: anything
	// sent before it was not delivered.
	Connected
	// Poll says the poll interval passed.
	Poll
)

func (k Kind) String() string {
	switch k {
	case Notification:
		return "notification"
	case Connected:
		return "connected"
	case Poll:
		return "poll"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is what Run hands its callback. Channel and Payload are set for a
// Notification only.
type Event struct {
	Kind    Kind
	Channel string
	Payload string
}

// Missed reports whether the event stands for changes that may not have
// been notified (Connected, Poll): the receiver should recheck everything.
func (e Event) Missed() bool { return e.Kind != Notification }

// Default bounds of the wait between reconnect attempts.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 15 * time.Second
)

// Listener listens on Channels over a connection of its own, taken out of
// Pool: a LISTENing connection must not be handed to anyone else.
type Listener struct {
	Pool     *pgxpool.Pool
	Channels []string
	// Poll is how often Run delivers a Poll event, whether it is listening
	// or not; zero delivers none (for callers with a timer of their own).
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting, which
	// doubles with every failure in a row; zero takes the defaults.
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger // nil: no logging
}

// Run listens until ctx ends, and returns ctx's error. It calls fn one
// event at a time, so fn needs no locking of its own, and never after it
// returns; fn should return quickly (record the event, wake a worker),
// since notifications queue up on the connection while it runs. Polls
// keep their schedule whatever the connection does, even while a connect
// hangs.
func (l *Listener) Run(ctx context.Context, fn func(Event)) error {
	minB, maxB := l.MinBackoff, l.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB < minB {
		maxB = max(DefaultMaxBackoff, minB)
	}
	log := l.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var mu sync.Mutex
	deliver := func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		fn(e)
	}
	if l.Poll > 0 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			poll(ctx, l.Poll, deliver)
		}()
		defer wg.Wait()
	}

	backoff := minB
	failures := 0
	for {
		err := l.session(ctx, deliver, func() {
			if failures > 0 {
				log.InfoContext(ctx, "listening again", "channels", l.Channels, "failures", failures)
			}
			failures, backoff = 0, minB
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		level := slog.LevelDebug
		if failures == 1 {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "not listening; retrying", "channels", l.Channels, "err", err, "failures", failures, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxB)
	}
}

// session takes a connection, listens on it and delivers events until it
// breaks or ctx ends. listening is called once LISTEN is in place.
func (l *Listener) session(ctx context.Context, deliver func(Event), listening func()) error {
	pooled, err := l.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	conn := pooled.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.Close(cctx) //nolint:errcheck // the connection is being thrown away
	}()
	for _, ch := range l.Channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	listening()
	deliver(Event{Kind: Connected})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		deliver(Event{Kind: Notification, Channel: n.Channel, Payload: n.Payload})
	}
}

// poll delivers a Poll every interval until ctx ends.
func poll(ctx context.Context, every time.Duration, deliver func(Event)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			deliver(Event{Kind: Poll})
		}
	}
}
