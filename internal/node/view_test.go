package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func register(t *testing.T, s node.Store, i int) node.Node {
	t.Helper()
	n, err := s.Register(context.Background(), ipam.DefaultCluster, node.Registration{
		ID: id.New(), Hostname: fmt.Sprintf("w%d", i), InternalAddress: fmt.Sprintf("100.64.0.%d:7000", i), CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// schedulableIDs is the view's schedulable nodes (active, heard from in
// the last minute) by ID.
func schedulableIDs(t *testing.T, v *node.View) map[uuid.UUID]node.Node {
	t.Helper()
	got, err := v.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(-time.Minute)
	out := map[uuid.UUID]node.Node{}
	for _, n := range got {
		if n.Status == node.StatusActive && n.LastHeartbeatAt.After(after) {
			out[n.ID] = n
		}
	}
	return out
}

func TestViewReadsOnlyWhatChangedAndCatchesUp(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := node.Store{DB: pool}
	a, b := register(t, s, 1), register(t, s, 2)
	v := &node.View{Store: s, FullEvery: time.Hour}

	// The first use reads the table.
	if got := schedulableIDs(t, v); len(got) != 2 || got[a.ID].FreeCPUMillis != 4000 {
		t.Fatalf("first read: %v", got)
	}

	// Changes reach the view at its next refresh, not before: it is a
	// copy, and the placements read the copy.
	c := register(t, s, 3)
	if err := s.Allocate(ctx, a.ID, 1000, 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus(ctx, b.ID, node.StatusDraining); err != nil {
		t.Fatal(err)
	}
	if got := schedulableIDs(t, v); len(got) != 2 || got[a.ID].FreeCPUMillis != 4000 {
		t.Fatalf("the view read the table between refreshes: %v", got)
	}
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got := schedulableIDs(t, v)
	if _, ok := got[b.ID]; ok {
		t.Fatal("a draining node is still schedulable after a refresh")
	}
	if _, ok := got[c.ID]; !ok || got[a.ID].FreeCPUMillis != 3000 || len(got) != 2 {
		t.Fatalf("after a refresh: %v, want the new node and a's reservation", got)
	}

	// Reserve applies a reservation the database accepted at once.
	v.Reserve(c.ID, 500, 512)
	if got := schedulableIDs(t, v); got[c.ID].FreeCPUMillis != 3500 || got[c.ID].FreeMemoryMB != 8192-512 {
		t.Fatalf("after Reserve: %+v", got[c.ID])
	}

	// A change stamped before the window an incremental read covers (a
	// long transaction that committed late) is caught by the full read.
	if _, err := pool.Exec(ctx, `UPDATE nodes SET status = 'draining', updated_at = now() - interval '1 hour' WHERE id = $1`, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := schedulableIDs(t, v)[c.ID]; !ok {
		t.Fatal("an incremental refresh read a row stamped an hour back: the test does not test the full read")
	}
	v.FullEvery = time.Nanosecond
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := schedulableIDs(t, v); len(got) != 1 || got[a.ID].ID != a.ID {
		t.Fatalf("after a full read: %v, want only a", got)
	}
}
