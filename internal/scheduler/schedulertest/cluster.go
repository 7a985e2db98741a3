// Package schedulertest owns an in-memory cluster for testing the scheduler
// and the control loops that call it: build nodes in a line each, ask for a
// Request with the cluster's clock filled in, and Apply placements the way
// the operator would (consuming capacity), with every placement checked
// against capacity and eligibility independently of the scheduler's own code.
package schedulertest

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/scheduler"
)

// DefaultRegion is the region of nodes added without the Region option.
const DefaultRegion = "eu-central-1"

// Cluster is a fake cluster view. Not safe for concurrent use.
type Cluster struct {
	Now               time.Time
	HeartbeatDeadline time.Duration

	nodes []scheduler.Node
	index map[uuid.UUID]int
}

// New returns an empty cluster with a fixed clock, so tests are
// reproducible.
func New() *Cluster {
	return &Cluster{
		Now:               time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC),
		HeartbeatDeadline: 30 * time.Second,
		index:             map[uuid.UUID]int{},
	}
}

// Option changes a node being added.
type Option func(c *Cluster, n *scheduler.Node)

// Region puts the node in region r.
func Region(r string) Option { return func(_ *Cluster, n *scheduler.Node) { n.Region = r } }

// Draining marks the node draining.
func Draining() Option {
	return func(_ *Cluster, n *scheduler.Node) { n.Status = scheduler.StatusDraining }
}

// Dead marks the node dead.
func Dead() Option { return func(_ *Cluster, n *scheduler.Node) { n.Status = scheduler.StatusDead } }

// Stale leaves the node active but with a heartbeat just past the deadline.
func Stale() Option {
	return func(c *Cluster, n *scheduler.Node) {
		n.LastHeartbeat = c.Now.Add(-c.HeartbeatDeadline - time.Second)
	}
}

// Instances sets how many instances already run on the node.
func Instances(k int) Option { return func(_ *Cluster, n *scheduler.Node) { n.Instances = k } }

// Add adds an active node with a fresh heartbeat and returns its ID. IDs
// grow with each Add, so the scheduler's ID tie-break follows insertion
// order.
func (c *Cluster) Add(cpuMillis, memoryMB int32, opts ...Option) uuid.UUID {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], uint64(len(c.nodes)+1))
	n := scheduler.Node{
		ID: id, Region: DefaultRegion,
		FreeCPUMillis: cpuMillis, FreeMemoryMB: memoryMB,
		Status: scheduler.StatusActive, LastHeartbeat: c.Now,
	}
	for _, o := range opts {
		o(c, &n)
	}
	c.index[id] = len(c.nodes)
	c.nodes = append(c.nodes, n)
	return id
}

// AddN adds n identical nodes.
func (c *Cluster) AddN(n int, cpuMillis, memoryMB int32, opts ...Option) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = c.Add(cpuMillis, memoryMB, opts...)
	}
	return ids
}

// Nodes returns the cluster's view, shared rather than copied so that
// benchmarks measure the scheduler; callers must not modify it.
func (c *Cluster) Nodes() []scheduler.Node { return c.nodes }

// Node returns the node with the given ID; it panics on an unknown ID, a
// bug in the test.
func (c *Cluster) Node(id uuid.UUID) scheduler.Node {
	i, ok := c.index[id]
	if !ok {
		panic(fmt.Sprintf("schedulertest: unknown node %s", id))
	}
	return c.nodes[i]
}

// Request returns a request with the cluster's clock and deadline.
func (c *Cluster) Request(replicas int, cpuMillis, memoryMB int32) scheduler.Request {
	return scheduler.Request{
		DeploymentID: uuid.New(),
		Replicas:     replicas, CPUMillis: cpuMillis, MemoryMB: memoryMB,
		Now: c.Now, HeartbeatDeadline: c.HeartbeatDeadline,
	}
}

// Check reports the first placement that breaks a rule: an unknown,
// inactive, stale or wrong-region node, or more instances on a node than its
// free CPU and memory hold (counting earlier placements of the same plan).
func (c *Cluster) Check(req scheduler.Request, ps []scheduler.Placement) error {
	usedCPU := map[uuid.UUID]int64{}
	usedMem := map[uuid.UUID]int64{}
	for i, p := range ps {
		j, ok := c.index[p.NodeID]
		if !ok {
			return fmt.Errorf("placement %d: unknown node %s", i, p.NodeID)
		}
		n := c.nodes[j]
		switch {
		case n.Status != scheduler.StatusActive:
			return fmt.Errorf("placement %d: node %s is %s", i, n.ID, n.Status)
		case req.Now.Sub(n.LastHeartbeat) > req.HeartbeatDeadline:
			return fmt.Errorf("placement %d: node %s heartbeat is stale", i, n.ID)
		case req.Region != "" && n.Region != req.Region:
			return fmt.Errorf("placement %d: node %s is in %s, not %s", i, n.ID, n.Region, req.Region)
		}
		usedCPU[n.ID] += int64(req.CPUMillis)
		usedMem[n.ID] += int64(req.MemoryMB)
		if usedCPU[n.ID] > int64(n.FreeCPUMillis) || usedMem[n.ID] > int64(n.FreeMemoryMB) {
			return fmt.Errorf("placement %d: node %s overcommitted (%dm/%d MiB free)", i, n.ID, n.FreeCPUMillis, n.FreeMemoryMB)
		}
	}
	return nil
}

// Apply checks the placements and then consumes their capacity, as the
// operator does when it creates the instances.
func (c *Cluster) Apply(req scheduler.Request, ps []scheduler.Placement) error {
	if err := c.Check(req, ps); err != nil {
		return err
	}
	for _, p := range ps {
		n := &c.nodes[c.index[p.NodeID]]
		n.FreeCPUMillis -= req.CPUMillis
		n.FreeMemoryMB -= req.MemoryMB
		n.Instances++
	}
	return nil
}
