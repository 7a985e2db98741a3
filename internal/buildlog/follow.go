package buildlog

import (
	"context"
	"fmt"
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
// safety net, so a lost notification costs latency, never lines.
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
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		})
	}()
	// The listening connection is closed before Follow returns.
	defer func() { cancel(); <-listening }()

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
