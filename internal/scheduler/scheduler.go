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
	"math/bits"
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
	// CPUMillis and MemoryMB are per instance and must be positive. CPU is
	// what a node reserves for an instance, its request (node.CPURequest),
	// which is less than the limit the instance runs under.
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

// candidate is an eligible node with everything the ordering needs copied
// in, so comparisons do not chase pointers back into the view.
type candidate struct {
	score     int64
	instances int
	id        uuid.UUID
	fits      int32 // instances of the requested size the node can hold
	avoid     bool
}

// better is the placement order: nodes outside Avoid, then most free
// capacity after placement, then fewer instances, then lower ID.
func better(a, b *candidate) bool {
	if a.avoid != b.avoid {
		return !a.avoid
	}
	if a.score != b.score {
		return a.score > b.score
	}
	if a.instances != b.instances {
		return a.instances < b.instances
	}
	return bytes.Compare(a.id[:], b.id[:]) < 0
}

// Place decides where the missing instances of one deployment go. It returns
// one Placement per instance to create (none if Existing already covers the
// replicas), best node first. Errors are ErrInvalidRequest (wrapped) or
// *CannotPlace. The nodes slice is not modified.
//
// Cost: O(n log k) time for n nodes and k instances, and a bit per node plus
// k candidates of memory: one pass classifies, a second pass over the
// eligible nodes only keeps the k best in a heap.
func Place(nodes []Node, req Request) ([]Placement, error) {
	replicas, want, err := req.count()
	if err != nil {
		return nil, err
	}
	if want == 0 {
		return nil, nil
	}

	// Pass 1: classify every node. It yields the normalisation for the score
	// and whether the eligible nodes have room, so pass 2 needs to keep only
	// k candidates. Each
	// node is counted once, under its first reason, in the order a user would
	// fix them.
	cp := CannotPlace{
		Instances: want, Replicas: replicas, Existing: req.Existing,
		CPUMillis: req.CPUMillis, MemoryMB: req.MemoryMB, Region: req.Region,
		Nodes: len(nodes),
	}
	cutoff := req.Now.Add(-req.HeartbeatDeadline)
	// eligible remembers pass 1's verdict so pass 2 neither repeats the
	// checks nor reads ineligible nodes: a bit per node.
	eligible := make([]uint64, (len(nodes)+63)/64)
	var room int64
	var maxCPU, maxMem int32
	for i := range nodes {
		n := &nodes[i]
		switch {
		case n.Status == StatusDead:
			cp.Dead++
		case n.Status == StatusDraining:
			cp.Draining++
		case n.Status != StatusActive:
			cp.Inactive++
		case n.LastHeartbeat.Before(cutoff):
			cp.Stale++
		case req.Region != "" && n.Region != req.Region:
			cp.WrongRegion++
		case n.FreeCPUMillis < req.CPUMillis:
			cp.LowCPU++
			cp.noteFree(n)
		case n.FreeMemoryMB < req.MemoryMB:
			cp.LowMemory++
			cp.noteFree(n)
		default:
			eligible[i/64] |= 1 << (i % 64)
			cp.Eligible++
			// Only whether room reaches want matters on success, so stop
			// dividing once it does; on failure it is the exact total.
			if room < int64(want) {
				room += int64(min(n.FreeCPUMillis/req.CPUMillis, n.FreeMemoryMB/req.MemoryMB))
			}
			maxCPU = max(maxCPU, n.FreeCPUMillis)
			maxMem = max(maxMem, n.FreeMemoryMB)
		}
	}
	// Nodes are independent, so the sum of what each holds on its own is
	// exactly what the cluster holds: checking it up front means the
	// selection below cannot fail, and bounds allocations for huge Replicas.
	if room < int64(want) {
		cp.Room = int(room)
		return nil, &cp
	}

	// Pass 2: keep the k best eligible nodes in a heap whose root is the
	// worst kept, k = want, or all eligible nodes when there are fewer.
	k := min(want, cp.Eligible)
	h := make([]candidate, 0, k)
	for w, word := range eligible {
		for ; word != 0; word &= word - 1 {
			i := w*64 + bits.TrailingZeros64(word)
			n := &nodes[i]
			// score is free CPU/maxCPU + free memory/maxMem after placement,
			// multiplied through by maxCPU*maxMem: exact integers, so ties are
			// real ties and the plan cannot depend on float rounding. Each
			// product is below 2^62, so the sum fits in an int64.
			score := int64(n.FreeCPUMillis-req.CPUMillis)*int64(maxMem) +
				int64(n.FreeMemoryMB-req.MemoryMB)*int64(maxCPU)
			// The common case on a large cluster: a node that cannot beat the
			// worst one kept, decided on score alone before looking at Avoid.
			if len(h) == k && !h[0].avoid && score < h[0].score {
				continue
			}
			c := candidate{
				score:     score,
				instances: n.Instances,
				id:        n.ID,
				fits:      min(n.FreeCPUMillis/req.CPUMillis, n.FreeMemoryMB/req.MemoryMB),
				avoid:     contains(req.Avoid, n.ID),
			}
			if len(h) < k {
				h = append(h, c)
				up(h, len(h)-1)
			} else if better(&c, &h[0]) {
				h[0] = c
				down(h, 0)
			}
		}
	}
	slices.SortFunc(h, func(a, b candidate) int {
		switch {
		case better(&a, &b):
			return -1
		case better(&b, &a):
			return 1
		}
		return 0
	})

	out := make([]Placement, 0, want)
	if len(h) == want {
		for _, c := range h {
			out = append(out, Placement{NodeID: c.id})
		}
		return out, nil
	}
	// Fewer eligible nodes than instances: deal round-robin, best node first,
	// skipping nodes that are full. The room check above guarantees this
	// ends with want placements.
	for len(out) < want {
		for i := range h {
			if h[i].fits == 0 {
				continue
			}
			h[i].fits--
			out = append(out, Placement{NodeID: h[i].id})
			if len(out) == want {
				break
			}
		}
	}
	return out, nil
}

// up and down keep h a heap with the worst candidate at the root.
func up(h []candidate, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !better(&h[p], &h[i]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func down(h []candidate, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		w := l // the worse child
		if r := l + 1; r < len(h) && better(&h[l], &h[r]) {
			w = r
		}
		if !better(&h[i], &h[w]) {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
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
