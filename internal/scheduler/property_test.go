package scheduler_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zeitwork/zeitwork/internal/scheduler"
	"github.com/zeitwork/zeitwork/internal/scheduler/schedulertest"
)

// TestPlaceProperties places random deployments on random clusters (seeded,
// so failures reproduce) and checks each plan against rules computed
// independently of Place: capacity and eligibility (schedulertest.Check),
// all or nothing, distinct nodes and Avoid whenever possible, agreement with
// the naive oracle, and independence from the order of the nodes.
func TestPlaceProperties(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0xdecaf))
		c := schedulertest.New()
		for range 1 + rng.IntN(40) {
			opts := []schedulertest.Option{schedulertest.Region(regions[rng.IntN(len(regions))])}
			switch rng.IntN(10) {
			case 0:
				opts = append(opts, schedulertest.Dead())
			case 1:
				opts = append(opts, schedulertest.Draining())
			case 2:
				opts = append(opts, schedulertest.Stale())
			}
			opts = append(opts, schedulertest.Instances(rng.IntN(4)))
			// Coarse capacities so that ties and exact fits happen.
			c.Add(int32(rng.IntN(9))*500, int32(rng.IntN(9))*512, opts...)
		}

		for d := range 30 {
			req := c.Request(rng.IntN(7), int32(1+rng.IntN(4))*250, int32(1+rng.IntN(4))*256)
			if rng.IntN(2) == 0 {
				req.Region = regions[rng.IntN(len(regions))]
			}
			req.Existing = rng.IntN(3)
			for _, n := range c.Nodes() {
				if rng.IntN(6) == 0 {
					req.Avoid = append(req.Avoid, n.ID)
				}
			}
			checkPlan(t, c, req, seed, d)
			ps, err := scheduler.Place(c.Nodes(), req)
			if err == nil {
				if err := c.Apply(req, ps); err != nil {
					t.Fatalf("seed %d deployment %d: %v", seed, d, err)
				}
			}
		}
	}
}

func checkPlan(t *testing.T, c *schedulertest.Cluster, req scheduler.Request, seed uint64, d int) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d deployment %d: "+format, append([]any{seed, d}, args...)...)
	}
	want := max(req.Replicas, scheduler.MinReplicas) - req.Existing

	// What the cluster can take, computed here rather than trusted from Place.
	var eligible, eligibleFresh int
	room := 0
	for _, n := range c.Nodes() {
		if n.Status != scheduler.StatusActive || req.Now.Sub(n.LastHeartbeat) > req.HeartbeatDeadline ||
			(req.Region != "" && n.Region != req.Region) {
			continue
		}
		fits := int(min(n.FreeCPUMillis/req.CPUMillis, n.FreeMemoryMB/req.MemoryMB))
		room += fits
		if fits > 0 {
			eligible++
			if !slices.Contains(req.Avoid, n.ID) {
				eligibleFresh++
			}
		}
	}

	ps, err := scheduler.Place(c.Nodes(), req)
	if room < want {
		var cp *scheduler.CannotPlace
		if !errors.As(err, &cp) || ps != nil {
			fail("room for %d of %d: Place() = %d placements, %v; want *CannotPlace", room, want, len(ps), err)
		}
		if cp.Room != room || cp.Eligible != eligible {
			fail("CannotPlace says room %d on %d nodes, want %d on %d", cp.Room, cp.Eligible, room, eligible)
		}
		return
	}
	if err != nil {
		fail("room for %d of %d: %v", room, want, err)
	}
	if len(ps) != want {
		fail("%d placements, want %d", len(ps), want)
	}
	if err := c.Check(req, ps); err != nil {
		fail("%v", err)
	}

	per := perNode(ps)
	onAvoided := 0
	for id := range per {
		if slices.Contains(req.Avoid, id) {
			onAvoided += per[id]
		}
	}
	switch {
	case eligible >= want && len(per) != want:
		fail("%d eligible nodes but %d instances share %d nodes", eligible, want, len(per))
	case eligible >= want && onAvoided != max(0, want-eligibleFresh):
		fail("%d instances on avoided nodes, want %d", onAvoided, max(0, want-eligibleFresh))
	case eligible < want:
		// Spread: no node has more than one instance above another unless
		// that other node is full.
		lo, hi := want, 0
		for _, n := range c.Nodes() {
			if k, ok := per[n.ID]; ok {
				hi = max(hi, k)
			}
		}
		for _, n := range c.Nodes() {
			k := per[n.ID]
			fits := int(min(n.FreeCPUMillis/req.CPUMillis, n.FreeMemoryMB/req.MemoryMB))
			if k < fits && n.Status == scheduler.StatusActive && req.Now.Sub(n.LastHeartbeat) <= req.HeartbeatDeadline &&
				(req.Region == "" || n.Region == req.Region) {
				lo = min(lo, k)
			}
		}
		if hi > lo+1 {
			fail("uneven spread: a node with room has %d, another %d", lo, hi)
		}
	}

	if eligible >= want {
		naive, err := naivePlace(c.Nodes(), req)
		if err != nil || !slices.Equal(nodesOf(naive), nodesOf(ps)) {
			fail("Place() = %v, naive = %v, %v", nodesOf(ps), nodesOf(naive), err)
		}
	}

	// The order of the view must not matter: the operator reads nodes in
	// whatever order the database returns them.
	shuffled := slices.Clone(c.Nodes())
	rand.New(rand.NewPCG(seed, uint64(d))).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	again, err := scheduler.Place(shuffled, req)
	if err != nil || !slices.Equal(nodesOf(again), nodesOf(ps)) {
		fail("shuffled nodes: %v, %v; want %v", nodesOf(again), err, nodesOf(ps))
	}
}
