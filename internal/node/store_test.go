package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestStatusCapacityAndDeath(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	nodes := node.Store{DB: pool}
	n, err := nodes.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if n.Status != node.StatusActive || n.FreeCPUMillis != 1000 || n.Prefix.Bits() != 64 {
		t.Fatalf("registered %+v", n)
	}

	if err := nodes.Allocate(ctx, n.ID, 800, 512); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Allocate(ctx, n.ID, 800, 512); !errors.Is(err, node.ErrNoCapacity) {
		t.Fatalf("over capacity: %v", err)
	}
	if err := nodes.Release(ctx, n.ID, 5000, 5000); err != nil {
		t.Fatal(err)
	}
	if got, _ := nodes.Get(ctx, n.ID); got.FreeCPUMillis != 1000 || got.FreeMemoryMB != 1024 {
		t.Fatalf("release went above the node's total: %+v", got)
	}

	if got, err := nodes.SetStatus(ctx, n.ID, node.StatusDraining); err != nil || got.Status != node.StatusDraining {
		t.Fatalf("drain: %v %v", got.Status, err)
	}
	if _, err := nodes.SetStatus(ctx, n.ID, node.StatusDead); !errors.Is(err, node.ErrInvalid) {
		t.Fatalf("set dead by hand: %v", err)
	}
	if _, err := nodes.SetStatus(ctx, id.New(), node.StatusActive); !errors.Is(err, node.ErrNotFound) {
		t.Fatalf("unknown node: %v", err)
	}

	if dead, err := nodes.MarkDeadIfStale(ctx, n.ID, time.Now().Add(-time.Minute)); err != nil || dead {
		t.Fatalf("a node heard from just now was declared dead: %v %v", dead, err)
	}
	if dead, err := nodes.MarkDeadIfStale(ctx, n.ID, time.Now().Add(time.Minute)); err != nil || !dead {
		t.Fatalf("a silent node was not declared dead: %v %v", dead, err)
	}
	if _, err := nodes.SetStatus(ctx, n.ID, node.StatusActive); !errors.Is(err, node.ErrInvalid) {
		t.Fatalf("undrain a dead node: %v", err)
	}
	// A dead node that heartbeats again is back.
	back, err := nodes.Heartbeat(ctx, n.ID, node.Observation{AvailableMemoryMB: -1, LoadMillis: -1, InstancesRunning: 0})
	if err != nil || back.Status != node.StatusActive {
		t.Fatalf("heartbeat after death: %v %v", back.Status, err)
	}
}

func TestRegisterRecordsTheAdvertisedAPI(t *testing.T) {
	ctx := context.Background()
	nodes := node.Store{DB: testdb.New(t)}
	n, err := nodes.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", APIAddress: "100.64.0.1:8082", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil || n.APIAddress != "100.64.0.1:8082" {
		t.Fatalf("registered %+v, %v", n, err)
	}
	// An agent that moves its API re-registers under the same internal
	// address; one that advertises nothing leaves no stale address behind.
	again, err := nodes.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil || again.ID != n.ID || again.APIAddress != "" {
		t.Fatalf("re-registered %+v, %v", again, err)
	}
}

// A drain outlives the agent's restart: an upgrade restarts the agent of
// a drained node, and it must take nothing new until it is undrained.
func TestRegisterKeepsADrainedNodeDraining(t *testing.T) {
	ctx := context.Background()
	nodes := node.Store{DB: testdb.New(t)}
	reg := node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024}
	n, err := nodes.Register(ctx, ipam.DefaultCluster, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.SetStatus(ctx, n.ID, node.StatusDraining); err != nil {
		t.Fatal(err)
	}
	again, err := nodes.Register(ctx, ipam.DefaultCluster, reg)
	if err != nil || again.ID != n.ID || again.Status != node.StatusDraining {
		t.Fatalf("re-registered a draining node: %s %s, %v", again.ID, again.Status, err)
	}
	// A dead node that registers again is back, as before.
	if dead, err := nodes.MarkDeadIfStale(ctx, n.ID, time.Now().Add(time.Minute)); err != nil || !dead {
		t.Fatalf("mark dead: %v %v", dead, err)
	}
	if back, err := nodes.Register(ctx, ipam.DefaultCluster, reg); err != nil || back.Status != node.StatusActive {
		t.Fatalf("re-registered a dead node: %s, %v", back.Status, err)
	}
}
