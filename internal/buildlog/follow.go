package buildlog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/pgnotify"
)

// Line is one stored line.
type Line struct {
	ID     uuid.UUID
	Stream Stream
	Text   string
	At     time.Time
}

// Page returns up to max lines stored after the line with id after
// (uuid.Nil: from the start).
func Page(ctx context.Context, q *db.Queries, buildID, after uuid.UUID, max int) ([]Line, error) {
	rows, err := q.BuildLogListByBuild(ctx, db.BuildLogListByBuildParams{BuildID: buildID, AfterID: after, MaxRows: int32(max)})
	if err != nil {
		return nil, fmt.Errorf("read build log: %w", err)
	}
	out := make([]Line, len(rows))
	for i, r := range rows {
		out[i] = Line{ID: r.ID, Stream: Stream(r.Stream), Text: r.Line, At: r.CreatedAt}
	}
	return out, nil
}

// Follow hands every line after after to fn, as it is stored, until the build
// has ended (ended reports so) and every line has been handed over, or ctx
// ends. It wakes on NOTIFY from writers and polls every poll interval as the
// safety net, so a lost notification costs latency, never lines. It listens
// on a connection of its own; a process with many followers shares one
// through a Hub.
func Follow(ctx context.Context, pool *pgxpool.Pool, buildID, after uuid.UUID, poll time.Duration,
	ended func(context.Context) (bool, error), fn func(Line) error) error {
	ctx, cancel := context.WithCancel(ctx)
	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	want := buildID.String()
	go func() {
		defer close(listening)
		l := &pgnotify.Listener{Pool: pool, Channels: []string{"build_logs"}, Poll: poll}
		l.Run(ctx, func(e pgnotify.Event) { //nolint:errcheck // it ends with ctx
			if e.Missed() || e.Payload == want {
				poke(wake)
			}
		})
	}()
	// The listening connection is closed before Follow returns.
	defer func() { cancel(); <-listening }()
	return follow(ctx, pool, buildID, after, ended, fn, wake)
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// follow is Follow's loop, woken through wake.
func follow(ctx context.Context, pool *pgxpool.Pool, buildID, after uuid.UUID,
	ended func(context.Context) (bool, error), fn func(Line) error, wake <-chan struct{}) error {
	q := db.New(pool)
	for {
		// Ask whether the build ended before reading, so that lines written
		// just before the end are still read on this pass.
		done, err := ended(ctx)
		if err != nil {
			return err
		}
		for {
			lines, err := Page(ctx, q, buildID, after, 1000)
			if err != nil {
				return err
			}
			for _, l := range lines {
				if err := fn(l); err != nil {
					return err
				}
				after = l.ID
			}
			if len(lines) < 1000 {
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// Hub lets the followers of one process share a single listening
// connection: each Follow would otherwise hold a Postgres connection of its
// own for as long as it follows, and a server streaming logs to many
// clients would run Postgres out of connections. The zero value (with Pool
// set) is ready; it listens only while someone follows.
type Hub struct {
	Pool *pgxpool.Pool
	Poll time.Duration // the safety net under NOTIFY

	mu   sync.Mutex
	subs map[uuid.UUID]map[chan struct{}]struct{}
	n    int                // followers
	stop context.CancelFunc // ends the listener; nil while nobody follows
	done chan struct{}      // closed once the listener's connection is closed
}

// Follow is Follow through the hub's connection.
func (h *Hub) Follow(ctx context.Context, buildID, after uuid.UUID,
	ended func(context.Context) (bool, error), fn func(Line) error) error {
	wake, leave := h.join(buildID)
	defer leave()
	return follow(ctx, h.Pool, buildID, after, ended, fn, wake)
}

func (h *Hub) join(buildID uuid.UUID) (chan struct{}, func()) {
	wake := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[uuid.UUID]map[chan struct{}]struct{}{}
	}
	if h.subs[buildID] == nil {
		h.subs[buildID] = map[chan struct{}]struct{}{}
	}
	h.subs[buildID][wake] = struct{}{}
	if h.n++; h.n == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		h.stop, h.done = cancel, done
		go func() {
			defer close(done)
			l := &pgnotify.Listener{Pool: h.Pool, Channels: []string{"build_logs"}, Poll: h.Poll}
			l.Run(ctx, h.deliver) //nolint:errcheck // it ends with ctx
		}()
	}
	h.mu.Unlock()
	return wake, func() {
		h.mu.Lock()
		delete(h.subs[buildID], wake)
		if len(h.subs[buildID]) == 0 {
			delete(h.subs, buildID)
		}
		var stop context.CancelFunc
		var done chan struct{}
		if h.n--; h.n == 0 {
			stop, done, h.stop = h.stop, h.done, nil
		}
		h.mu.Unlock()
		if stop != nil {
			stop()
			<-done // the last follower leaves no connection behind
		}
	}
}

// deliver wakes the followers an event concerns: those of the build a
// notification names, everyone when notifications may have been missed.
func (h *Hub) deliver(e pgnotify.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Missed() {
		for _, subs := range h.subs {
			for c := range subs {
				poke(c)
			}
		}
		return
	}
	if id, err := uuid.Parse(e.Payload); err == nil {
		for c := range h.subs[id] {
			poke(c)
		}
	}
}
