package buildlog_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// listening counts this database's connections that LISTEN.
func listening(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHubFollowersShareOneConnection: three followers of two builds listen
// on one connection, each sees its own build's lines as they are stored
// (a one-hour poll: only NOTIFY can deliver them), and the connection is
// gone once the last follower left.
func TestHubFollowersShareOneConnection(t *testing.T) {
	pool := testdb.New(t)
	builds := []uuid.UUID{newBuild(t, pool), newBuild(t, pool)}
	hub := &buildlog.Hub{Pool: pool, Poll: time.Hour}
	var ended atomic.Bool
	type seen struct {
		follower int
		text     string
	}
	lines := make(chan seen, 100)
	errc := make(chan error, 3)
	for i, b := range []uuid.UUID{builds[0], builds[0], builds[1]} {
		go func() {
			errc <- hub.Follow(context.Background(), b, uuid.Nil,
				func(context.Context) (bool, error) { return ended.Load(), nil },
				func(l buildlog.Line) error { lines <- seen{i, l.Text}; return nil })
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for listening(t, pool) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d listening connections, want 1", listening(t, pool))
		}
		time.Sleep(10 * time.Millisecond)
	}

	lim := buildlog.DefaultLimits
	lim.FlushInterval = 10 * time.Millisecond
	writers := []*buildlog.Writer{buildlog.NewWriter(pool, builds[0], lim, zlog.Discard()), buildlog.NewWriter(pool, builds[1], lim, zlog.Discard())}
	for round := range 2 {
		for b, w := range writers {
			w.Line(buildlog.Stdout, "build %d line %d", b, round)
		}
		got := map[seen]bool{}
		for len(got) < 3 {
			select {
			case s := <-lines:
				got[s] = true
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: only %v", round, got)
			}
		}
		want := map[seen]bool{{0, fmt.Sprintf("build 0 line %d", round)}: true, {1, fmt.Sprintf("build 0 line %d", round)}: true, {2, fmt.Sprintf("build 1 line %d", round)}: true}
		for s := range got {
			if !want[s] {
				t.Fatalf("round %d: follower %d saw %q", round, s.follower, s.text)
			}
		}
	}
	if n := listening(t, pool); n != 1 {
		t.Fatalf("%d listening connections for three followers, want 1", n)
	}
	ended.Store(true)
	for _, w := range writers {
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Wake them: the build ended, which followers learn on their next look.
	if _, err := pool.Exec(context.Background(), `SELECT pg_notify('build_logs', $1), pg_notify('build_logs', $2)`, builds[0].String(), builds[1].String()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a follower did not end with its build")
		}
	}
	for listening(t, pool) != 0 {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("%d listening connections after the last follower left", listening(t, pool))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
