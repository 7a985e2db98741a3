package node

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// View is an in-memory copy of the nodes table for placement. Reading every
// node per placement costs about 100 ms at 10,000 nodes, a thousand times
// the placement itself; the view instead reads, in the background, only the
// rows changed since its last read, so a placement reads memory.
//
// A view may be behind the table by up to its refresh interval. That is
// safe: the view only proposes nodes, and reserving capacity on one is a
// conditional update in the database (Store.Allocate) that refuses to
// overcommit, after which the caller places again. Reserve applies a
// successful reservation to the view at once so that the next placement
// does not pick the same full node.
type View struct {
	Store Store
	// Overlap re-reads rows changed this long before the newest change
	// seen: updated_at is the time a transaction started, so a row written
	// by a transaction that started earlier but committed after the last
	// read would otherwise be missed. Every FullEvery the whole table is
	// read again, which bounds what any longer transaction could hide.
	Overlap   time.Duration
	FullEvery time.Duration
	Log       *slog.Logger

	mu sync.Mutex
	// nodes is a snapshot: never modified once published, replaced as a
	// whole (copy on write), so a reader holds it without a lock while it
	// places. At 10,000 nodes a copy is a couple of MB moved in one go,
	// cheaper than the per-placement copies a mutable table would need.
	nodes  []Node
	index  map[uuid.UUID]int
	since  time.Time // newest updated_at seen
	fullAt time.Time // when the whole table was last read
	loaded bool
}

// Defaults for View.
const (
	DefaultViewOverlap   = time.Second
	DefaultViewFullEvery = 30 * time.Second
)

// Refresh brings the view up to date: the whole table on the first call
// and every FullEvery, the changed rows otherwise.
func (v *View) Refresh(ctx context.Context) error {
	v.mu.Lock()
	full := !v.loaded || time.Since(v.fullAt) >= v.fullEvery()
	since := v.since.Add(-v.overlap())
	v.mu.Unlock()

	if full {
		since = time.Time{}
	}
	started := time.Now()
	rows, err := v.Store.q().NodeListUpdatedSince(ctx, since)
	if err != nil {
		return fmt.Errorf("refresh node view: %w", err)
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	var nodes []Node
	var index map[uuid.UUID]int
	if full {
		// Replace rather than merge, so a row that disappeared goes too.
		nodes, index = make([]Node, 0, len(rows)), make(map[uuid.UUID]int, len(rows))
		v.fullAt, v.loaded = started, true
	} else {
		if len(rows) == 0 {
			return nil
		}
		nodes, index = slices.Clone(v.nodes), v.index
	}
	for _, r := range rows {
		if r.UpdatedAt.After(v.since) {
			v.since = r.UpdatedAt
		}
		if i, ok := index[r.ID]; ok {
			nodes[i] = fromRow(r)
			continue
		}
		if !full && len(index) == len(v.index) {
			index = maps.Clone(index) // the published map stays as it was
		}
		index[r.ID] = len(nodes)
		nodes = append(nodes, fromRow(r))
	}
	v.nodes, v.index = nodes, index
	return nil
}

// Run refreshes the view every interval until ctx ends. A failed refresh
// is logged and retried at the next tick: placements go on with what the
// view has, which the database still checks.
func (v *View) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.Refresh(ctx); err != nil && ctx.Err() == nil && v.Log != nil {
				v.Log.WarnContext(ctx, "node view refresh failed", "err", err)
			}
		}
	}
}

// Nodes returns every node the view holds, in no particular order, whatever
// its status or heartbeat: the caller filters (the scheduler does, by the
// same rules as Store.ListSchedulable). The slice is shared: read it, never
// modify it. Before the first refresh it reads the table.
func (v *View) Nodes(ctx context.Context) ([]Node, error) {
	v.mu.Lock()
	nodes, loaded := v.nodes, v.loaded
	v.mu.Unlock()
	if loaded {
		return nodes, nil
	}
	if err := v.Refresh(ctx); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.nodes, nil
}

// Reserve records in the view a reservation the database accepted, until
// the next refresh reads the row itself.
func (v *View) Reserve(id uuid.UUID, cpuMillis, memoryMB int32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, ok := v.index[id]
	if !ok {
		return
	}
	nodes := slices.Clone(v.nodes)
	nodes[i].FreeCPUMillis = max(0, nodes[i].FreeCPUMillis-cpuMillis)
	nodes[i].FreeMemoryMB = max(0, nodes[i].FreeMemoryMB-memoryMB)
	v.nodes = nodes
}

func (v *View) overlap() time.Duration {
	if v.Overlap > 0 {
		return v.Overlap
	}
	return DefaultViewOverlap
}

func (v *View) fullEvery() time.Duration {
	if v.FullEvery > 0 {
		return v.FullEvery
	}
	return DefaultViewFullEvery
}
