package buildlog

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
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
// safety net, so a lost notification costs latency, never lines.
func Follow(ctx context.Context, pool *pgxpool.Pool, buildID, after uuid.UUID, poll time.Duration,
	ended func(context.Context) (bool, error), fn func(Line) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("follow build log: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN build_logs"); err != nil {
		return fmt.Errorf("follow build log: %w", err)
	}
	// The connection goes back to the pool: stop listening on it first.
	defer conn.Exec(context.WithoutCancel(ctx), "UNLISTEN build_logs") //nolint:errcheck

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
		if err := waitNotify(ctx, conn, buildID, poll); err != nil {
			return err
		}
	}
}

// waitNotify returns when a notification for buildID arrives or poll passes.
func waitNotify(ctx context.Context, conn *pgxpool.Conn, buildID uuid.UUID, poll time.Duration) error {
	deadline := time.Now().Add(poll)
	want := buildID.String()
	for {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return nil // the poll interval passed
		case n.Payload == want:
			return nil
		}
	}
}
