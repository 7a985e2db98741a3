package buildlog_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// newBuild makes the rows a build log hangs off: org → project → deployment → build.
func newBuild(t *testing.T, pool *pgxpool.Pool) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	proj, dep, build := testdb.Project(t, pool), id.New(), id.New()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas) VALUES ($1, $2, 'building', 'upload', 'k', 3)`, []any{dep, proj}},
		{`INSERT INTO builds (id, deployment_id, attempt) VALUES ($1, $2, 1)`, []any{build, dep}},
	} {
		if _, err := pool.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("%s: %v", stmt.sql, err)
		}
	}
	return build
}

func all(t *testing.T, pool *pgxpool.Pool, build uuid.UUID) []buildlog.Line {
	t.Helper()
	lines, err := buildlog.Page(context.Background(), db.New(pool), build, uuid.Nil, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestWriterStoresLinesInOrderWithPartials(t *testing.T) {
	pool := testdb.New(t)
	build := newBuild(t, pool)
	w := buildlog.NewWriter(pool, build, buildlog.DefaultLimits, zlog.Discard())
	out, errs := w.Stream(buildlog.Stdout), w.Stream(buildlog.Stderr)

	w.Line(buildlog.System, "detected %s", "Next.js")
	fmt.Fprint(out, "step 1\nstep ")
	fmt.Fprint(errs, "warning: x\r\n")
	fmt.Fprint(out, "2\nno newline at the end")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	got := all(t, pool, build)
	want := []string{"system detected Next.js", "stdout step 1", "stderr warning: x", "stdout step 2", "stdout no newline at the end"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines %v, want %v", len(got), got, want)
	}
	for i, l := range got {
		if s := string(l.Stream) + " " + l.Text; s != want[i] {
			t.Errorf("line %d = %q, want %q", i, s, want[i])
		}
	}
}

func TestWriterBoundsWhatABuildStores(t *testing.T) {
	pool := testdb.New(t)
	build := newBuild(t, pool)
	lim := buildlog.Limits{MaxBytes: 1000, MaxLineBytes: 50, FlushInterval: time.Hour, FlushLines: 7}
	w := buildlog.NewWriter(pool, build, lim, zlog.Discard())
	out := w.Stream(buildlog.Stdout)
	fmt.Fprintln(out, strings.Repeat("é", 100)) // 200 bytes: cut at 50, on a rune boundary
	for i := range 200 {
		fmt.Fprintf(out, "line %03d of a noisy build\n", i)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := all(t, pool, build)
	if !strings.HasSuffix(got[0].Text, "[line truncated]") || !strings.HasPrefix(got[0].Text, strings.Repeat("é", 25)+" ") {
		t.Fatalf("long line stored as %q", got[0].Text)
	}
	last := got[len(got)-1]
	if last.Stream != buildlog.System || !strings.Contains(last.Text, "log limit of 1000 bytes reached") {
		t.Fatalf("last line = %+v, want the limit notice", last)
	}
	total := 0
	for _, l := range got[:len(got)-1] {
		total += len(l.Text)
	}
	if total > 1000 || len(got) > 45 {
		t.Fatalf("stored %d bytes in %d lines, want at most 1000 bytes", total, len(got))
	}
}

func TestFollowSeesLinesLiveAndStopsWhenTheBuildEnds(t *testing.T) {
	pool := testdb.New(t)
	build := newBuild(t, pool)
	lim := buildlog.DefaultLimits
	lim.FlushInterval = 20 * time.Millisecond
	w := buildlog.NewWriter(pool, build, lim, zlog.Discard())

	var ended atomic.Bool
	seen := make(chan string, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- buildlog.Follow(context.Background(), pool, build, uuid.Nil, time.Hour,
			func(context.Context) (bool, error) { return ended.Load(), nil },
			func(l buildlog.Line) error { seen <- l.Text; return nil })
	}()

	// With a one-hour poll, only NOTIFY can deliver these promptly.
	for i := range 3 {
		w.Line(buildlog.Stdout, "live %d", i)
		select {
		case got := <-seen:
			if got != fmt.Sprintf("live %d", i) {
				t.Fatalf("follower saw %q, want live %d", got, i)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("follower did not see line %d", i)
		}
	}
	w.Line(buildlog.System, "build finished")
	ended.Store(true)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Follow did not return after the build ended")
	}
	if got := <-seen; got != "build finished" {
		t.Fatalf("last line %q", got)
	}
}
