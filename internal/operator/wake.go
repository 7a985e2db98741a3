package operator

import (
	"context"
	"log/slog"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/pgnotify"
)

// Wakeups lets a deploy step waiting on its instances wake as soon as one
// of them reports a state the step acts on, instead of at its next poll:
// the node agents' reports NOTIFY (instance.StatesChannel) with the
// deployment's id. The poll stays underneath for what a notification
// misses.
type Wakeups struct {
	mu      sync.Mutex
	waiting map[uuid.UUID]map[chan struct{}]struct{}
}

// Subscribe returns a channel that receives when dep's instances changed;
// cancel ends the subscription.
func (w *Wakeups) Subscribe(dep uuid.UUID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiting == nil {
		w.waiting = map[uuid.UUID]map[chan struct{}]struct{}{}
	}
	if w.waiting[dep] == nil {
		w.waiting[dep] = map[chan struct{}]struct{}{}
	}
	w.waiting[dep][ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.waiting[dep], ch)
		if len(w.waiting[dep]) == 0 {
			delete(w.waiting, dep)
		}
	}
}

// Notify wakes dep's subscribers; uuid.Nil wakes everyone (after a
// reconnect, when notifications may have been missed).
func (w *Wakeups) Notify(dep uuid.UUID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wake := func(subs map[chan struct{}]struct{}) {
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default: // already due to wake
			}
		}
	}
	if dep != uuid.Nil {
		wake(w.waiting[dep])
		return
	}
	for _, subs := range w.waiting {
		wake(subs)
	}
}

// Run listens for the agents' reports until ctx ends.
func (w *Wakeups) Run(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	l := &pgnotify.Listener{Pool: pool, Channels: []string{instance.StatesChannel}, Log: log}
	return l.Run(ctx, func(e pgnotify.Event) {
		if e.Missed() {
			w.Notify(uuid.Nil)
			return
		}
		if dep, err := uuid.Parse(e.Payload); err == nil {
			w.Notify(dep)
		}
	})
}
