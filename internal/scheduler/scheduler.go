// Package scheduler owns instance placement: given a read-only view of the
// worker nodes and one deployment's needs, it decides which nodes the
// deployment's new instances go on, or says in words a user can act on why
// they cannot be placed.
//
// Place is a pure function: no database, no clock, no I/O. The operator
// reads the nodes, calls Place, and writes the plan; that keeps the policy
// cheap to test against an in-memory cluster (see schedulertest) and safe to
// run in every operator at once.
//
// The rules, in order of precedence:
//
//   - A deployment runs at least MinReplicas instances; a Request asking for
//     fewer is raised to MinReplicas, so that losing one node never takes a
//     deployment down. Existing live instances are subtracted (self-healing
//     places only what is missing).
//   - Only eligible nodes take instances: status "active", a heartbeat no
//     older than Request.HeartbeatDeadline, the requested region (if any), and
//     enough free CPU and memory for one instance.
//   - Instances go on distinct nodes whenever there are enough eligible nodes.
//     When there are not, they are dealt round-robin over the eligible nodes,
//     best first, skipping a node once it is full: the instances are spread as
//     evenly as capacity allows, so a single node loss takes as few as
//     possible. Spreading wins over Request.Avoid: a second instance on an
//     avoided node is no worse than a second instance on a fresh one.
//   - Among eligible nodes, nodes not in Request.Avoid come first, then the
//     node with the most free CPU and memory after placement (each normalised
//     by the largest free amount among eligible nodes, so neither resource
//     dominates because of its unit), then fewer running instances, then the
//     lower node ID, so the same input always gives the same plan.
//   - Placement is all or nothing: when the eligible nodes cannot hold every
//     instance, Place returns a *CannotPlace and no placements, so a
//     deployment is never half started by the scheduler's choice.
package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// MinReplicas is the fewest instances a deployment runs.
const MinReplicas = 3

// Node statuses. Only StatusActive nodes take new instances.
const (
	StatusActive   = "active"
	StatusDraining = "draining"
	StatusDead     = "dead"
)

// ErrInvalidRequest is returned (wrapped) for a Request that no cluster could
// satisfy because the request itself is wrong, as opposed to *CannotPlace.
var ErrInvalidRequest = errors.New("scheduler: invalid request")

// Node is the scheduler's read-only view of one worker.
type Node struct {
	ID            uuid.UUID
	Region        string
	FreeCPUMillis int32
	FreeMemoryMB  int32
	// Status is StatusActive, StatusDraining or StatusDead; anything else is
	// treated as not active.
	Status string
	// LastHeartbeat older than Request.HeartbeatDeadline before Request.Now
	// makes the node count as dead whatever its Status says: the row may not
	// have caught up with the node's death yet.
	LastHeartbeat time.Time
	// Instances already running on the node, of any deployment; a
	// tie-breaker that spreads load.
	Instances int
}

// Request is one deployment's needs.
type Request struct {
	DeploymentID uuid.UUID
	// Replicas is the project's setting; values below MinReplicas are raised
	// to MinReplicas.
	Replicas int
	// CPUMillis and MemoryMB are per instance and must be positive.
	CPUMillis int32
	MemoryMB  int32
	// Region restricts placement to nodes of that region; "" means any.
	Region string
	// Avoid lists nodes that already run this deployment's instances;
	// replacement placements prefer other nodes.
	Avoid []uuid.UUID
	// Existing is the number of this deployment's instances already placed
	// and alive; Place places only max(Replicas, MinReplicas) - Existing.
	Existing int
	// Now and HeartbeatDeadline decide which heartbeats are stale. Both are
	// required: a zero deadline would silently let dead nodes take work.
	Now               time.Time
	HeartbeatDeadline time.Duration
}

// Placement is one instance to create.
type Placement struct {
	NodeID uuid.UUID
}

// candidate is an eligible node with what the selection needs precomputed.
type candidate struct {
	score float64
	idx   int32
	fits  int32 // instances of the requested size the node can hold
	avoid bool
}

// Place decides where the missing instances of one deployment go. It returns
// one Placement per instance to create (none if Existing already covers the
// replicas), best node first. Errors are ErrInvalidRequest (wrapped) or
// *CannotPlace.
//
// Cost: one pass over the nodes, then a bounded heap over the eligible ones,
// O(n log k) for k instances; the nodes slice is not modified.
func Place(nodes []Node, req Request) ([]Placement, error) {
	replicas, want, err := req.count()
	if err != nil {
		return nil, err
	}
	if want == 0 {
		return nil, nil
	}

	// One pass: classify every node, keep the eligible ones. Precedence of the
	// reasons is the order a user would fix them in; each node is counted
	// once, under its first reason.
	cp := CannotPlace{
		Instances: want, Replicas: replicas, Existing: req.Existing,
		CPUMillis: req.CPUMillis, MemoryMB: req.MemoryMB, Region: req.Region,
		Nodes: len(nodes),
	}
	cutoff := req.Now.Add(-req.HeartbeatDeadline)
	cands := make([]candidate, 0, min(len(nodes), 1024))
	var room int64
	var maxCPU, maxMem int32
	for i := range nodes {
		n := &nodes[i]
		switch {
		case n.Status == StatusDead:
			cp.Dead++
			continue
		case n.Status == StatusDraining:
			cp.Draining++
			continue
		case n.Status != StatusActive:
			cp.Inactive++
			continue
		case n.LastHeartbeat.Before(cutoff):
			cp.Stale++
			continue
		case req.Region != "" && n.Region != req.Region:
			cp.WrongRegion++
			continue
		case n.FreeCPUMillis < req.CPUMillis:
			cp.LowCPU++
			cp.noteFree(n)
			continue
		case n.FreeMemoryMB < req.MemoryMB:
			cp.LowMemory++
			cp.noteFree(n)
			continue
		}
		fits := min(n.FreeCPUMillis/req.CPUMillis, n.FreeMemoryMB/req.MemoryMB)
		room += int64(fits)
		maxCPU = max(maxCPU, n.FreeCPUMillis)
		maxMem = max(maxMem, n.FreeMemoryMB)
		cands = append(cands, candidate{idx: int32(i), fits: fits, avoid: contains(req.Avoid, n.ID)})
	}
	// Nodes are independent, so the sum of what each can hold on its own is
	// exactly what the cluster can hold: checking it up front means the
	// selection below cannot fail, and bounds the allocation for huge Replicas.
	if room < int64(want) {
		cp.Eligible = len(cands)
		cp.Room = int(room)
		return nil, &cp
	}

	for i := range cands {
		n := &nodes[cands[i].idx]
		cands[i].score = float64(n.FreeCPUMillis-req.CPUMillis)/float64(maxCPU) +
			float64(n.FreeMemoryMB-req.MemoryMB)/float64(maxMem)
	}
	better := func(a, b *candidate) bool {
		if a.avoid != b.avoid {
			return !a.avoid
		}
		if a.score != b.score {
			return a.score > b.score
		}
		na, nb := &nodes[a.idx], &nodes[b.idx]
		if na.Instances != nb.Instances {
			return na.Instances < nb.Instances
		}
		return bytes.Compare(na.ID[:], nb.ID[:]) < 0
	}

	out := make([]Placement, 0, want)
	if len(cands) >= want {
		for _, c := range topK(cands, want, better) {
			out = append(out, Placement{NodeID: nodes[c.idx].ID})
		}
		return out, nil
	}

	// Fewer eligible nodes than instances (so len(cands) < want, small): deal
	// round-robin, best node first, skipping nodes that are full. The room
	// check above guarantees this terminates with want placements.
	slices.SortFunc(cands, byBetter(better))
	for len(out) < want {
		for i := range cands {
			if cands[i].fits == 0 {
				continue
			}
			cands[i].fits--
			out = append(out, Placement{NodeID: nodes[cands[i].idx].ID})
			if len(out) == want {
				break
			}
		}
	}
	return out, nil
}

// count validates req and returns the effective replica count and how many
// instances to place now.
func (req *Request) count() (replicas, want int, err error) {
	switch {
	case req.CPUMillis <= 0:
		return 0, 0, fmt.Errorf("%w: CPU per instance must be positive, got %dm", ErrInvalidRequest, req.CPUMillis)
	case req.MemoryMB <= 0:
		return 0, 0, fmt.Errorf("%w: memory per instance must be positive, got %d MiB", ErrInvalidRequest, req.MemoryMB)
	case req.Replicas < 0:
		return 0, 0, fmt.Errorf("%w: replicas must not be negative, got %d", ErrInvalidRequest, req.Replicas)
	case req.Existing < 0:
		return 0, 0, fmt.Errorf("%w: existing instances must not be negative, got %d", ErrInvalidRequest, req.Existing)
	case req.Now.IsZero():
		return 0, 0, fmt.Errorf("%w: Now is not set", ErrInvalidRequest)
	case req.HeartbeatDeadline <= 0:
		return 0, 0, fmt.Errorf("%w: heartbeat deadline must be positive, got %s", ErrInvalidRequest, req.HeartbeatDeadline)
	}
	replicas = max(req.Replicas, MinReplicas)
	return replicas, max(replicas-req.Existing, 0), nil
}

// contains is a linear scan: Avoid holds a deployment's own nodes, a handful,
// and only eligible nodes are looked up, so a map would cost more to build
// than it saves.
func contains(ids []uuid.UUID, id uuid.UUID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// topK returns the k best candidates, best first, in O(n log k): a min-heap
// of size k whose root is the worst candidate kept so far.
func topK(cands []candidate, k int, better func(a, b *candidate) bool) []candidate {
	h := make([]candidate, 0, k)
	// worse reports whether h[i] should sit above h[j] in the heap.
	worse := func(i, j int) bool { return better(&h[j], &h[i]) }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			m := l
			if r := l + 1; r < len(h) && worse(r, l) {
				m = r
			}
			if !worse(m, i) {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for _, c := range cands {
		if len(h) < k {
			h = append(h, c)
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !worse(i, p) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
			continue
		}
		if better(&c, &h[0]) {
			h[0] = c
			down(0)
		}
	}
	slices.SortFunc(h, byBetter(better))
	return h
}

// byBetter turns a "better" predicate into a best-first comparison.
func byBetter(better func(a, b *candidate) bool) func(a, b candidate) int {
	return func(a, b candidate) int {
		switch {
		case better(&a, &b):
			return -1
		case better(&b, &a):
			return 1
		}
		return 0
	}
}
