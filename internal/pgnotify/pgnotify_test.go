package pgnotify_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/pgnotify"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// patience bounds every wait: generous, since a wait that ends early
// costs nothing and a loaded CI machine can be slow.
const patience = 30 * time.Second

// run starts l and returns its events; the listener stops when the test
// ends.
func run(t *testing.T, l *pgnotify.Listener) <-chan pgnotify.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan pgnotify.Event, 64)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(e pgnotify.Event) {
			select {
			case events <- e:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(patience):
			t.Error("Run did not return after its context ended")
		}
	})
	return events
}

// next waits for an event that ok accepts, and fails the test if a
// forbidden one comes first (nil: none is).
func next(t *testing.T, events <-chan pgnotify.Event, what string, ok, forbidden func(pgnotify.Event) bool) pgnotify.Event {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case e := <-events:
			if ok(e) {
				return e
			}
			if forbidden != nil && forbidden(e) {
				t.Fatalf("waiting for %s: got %+v", what, e)
			}
		case <-deadline:
			t.Fatalf("waited %s for %s in vain", patience, what)
		}
	}
}

func is(k pgnotify.Kind) func(pgnotify.Event) bool {
	return func(e pgnotify.Event) bool { return e.Kind == k }
}

func notification(channel, payload string) func(pgnotify.Event) bool {
	return func(e pgnotify.Event) bool {
		return e.Kind == pgnotify.Notification && e.Channel == channel && e.Payload == payload
	}
}

func notify(t *testing.T, pool *pgxpool.Pool, channel, payload string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), "SELECT pg_notify($1, $2)", channel, payload); err != nil {
		t.Fatal(err)
	}
}

func TestDeliversNotificationsOnEveryChannel(t *testing.T) {
	pool := testdb.New(t)
	events := run(t, &pgnotify.Listener{Pool: pool, Channels: []string{"one", "two words"}, Log: zlog.Discard()})
	next(t, events, "connected", is(pgnotify.Connected), nil)

	notify(t, pool, "one", "a")
	notify(t, pool, "other", "ignored")
	notify(t, pool, "two words", "")
	notify(t, pool, "one", "b")
	for _, want := range []pgnotify.Event{
		{Kind: pgnotify.Notification, Channel: "one", Payload: "a"},
		{Kind: pgnotify.Notification, Channel: "two words", Payload: ""},
		{Kind: pgnotify.Notification, Channel: "one", Payload: "b"},
	} {
		got := next(t, events, "a notification", is(pgnotify.Notification), nil)
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		if got.Missed() {
			t.Fatalf("%+v reports missed changes", got)
		}
	}
}

func TestReconnectsAfterTheConnectionIsKilled(t *testing.T) {
	pool := testdb.New(t)
	events := run(t, &pgnotify.Listener{Pool: pool, Channels: []string{"ch"}, MinBackoff: 10 * time.Millisecond, Log: zlog.Discard()})
	next(t, events, "connected", is(pgnotify.Connected), nil)
	notify(t, pool, "ch", "before")
	next(t, events, "the first notification", notification("ch", "before"), nil)

	// Only the listener's connection has LISTEN as its last statement.
	var killed int
	if err := pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		 WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listening backends, want 1", killed)
	}
	e := next(t, events, "connected again", is(pgnotify.Connected), is(pgnotify.Notification))
	if !e.Missed() {
		t.Fatal("a reconnect does not report missed changes")
	}
	notify(t, pool, "ch", "after")
	next(t, events, "the notification after the reconnect", notification("ch", "after"), nil)
}

func TestPollsWhilePostgresRefusesAndListensOnceItAccepts(t *testing.T) {
	url := testdb.NewURL(t)
	ctx := context.Background()
	connect := func(url string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	// A database cannot refuse connections from a session inside it: the
	// switch is thrown from the server's own database.
	admin := connect(testenv.Endpoints(t).Database.URL.Reveal())
	notifier := connect(url)
	var name string
	if err := notifier.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	allow := func(yes bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS "+strconv.FormatBool(yes)); err != nil {
			t.Fatal(err)
		}
	}
	// notifier is connected already; every new connection is refused.
	allow(false)
	t.Cleanup(func() { allow(true) })

	// A fresh pool holds no connection, so the listener has to open one.
	pool := testdb.Pool(t, url)
	events := run(t, &pgnotify.Listener{Pool: pool, Channels: []string{"ch"}, Poll: 20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Log: zlog.Discard()})
	for range 3 {
		e := next(t, events, "a poll while refused", is(pgnotify.Poll), is(pgnotify.Connected))
		if !e.Missed() {
			t.Fatal("a poll does not report missed changes")
		}
	}

	allow(true)
	next(t, events, "connected once accepted", is(pgnotify.Connected), nil)
	if _, err := notifier.Exec(ctx, "SELECT pg_notify('ch', 'hello')"); err != nil {
		t.Fatal(err)
	}
	next(t, events, "the notification", notification("ch", "hello"), nil)
	// Polling goes on while listening.
	next(t, events, "a poll while listening", is(pgnotify.Poll), nil)
}
