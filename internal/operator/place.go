package operator

import (
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/scheduler"
)

// SchedulerPlacer places with internal/scheduler: distinct nodes where
// there are enough, by free capacity, never on dead, draining or silent
// nodes, with a reason a person can act on when it cannot.
func SchedulerPlacer(heartbeatDeadline time.Duration) Placer {
	return func(nodes []node.Node, need Need) ([]uuid.UUID, error) {
		// The scheduler's view of every node is rebuilt per placement; at
		// 10,000 nodes its buffer is reused rather than allocated each time.
		buf := views.Get().(*[]scheduler.Node)
		defer views.Put(buf)
		view := slices.Grow((*buf)[:0], len(nodes))[:len(nodes)]
		*buf = view
		for i, n := range nodes {
			running := 0
			if n.InstancesRunning != nil {
				running = int(*n.InstancesRunning)
			}
			view[i] = scheduler.Node{
				ID: n.ID, Region: n.Region, FreeCPUMillis: n.FreeCPUMillis, FreeMemoryMB: n.FreeMemoryMB,
				Status: schedulerStatus(n.Status), LastHeartbeat: n.LastHeartbeatAt, Instances: running,
			}
		}
		existing := len(need.Avoid)
		placements, err := scheduler.Place(view, scheduler.Request{
			DeploymentID: need.DeploymentID, Replicas: existing + need.Instances, Existing: existing,
			CPUMillis: need.CPUMillis, MemoryMB: need.MemoryMB, Avoid: need.Avoid,
			Now: time.Now(), HeartbeatDeadline: heartbeatDeadline,
		})
		if err != nil {
			return nil, err
		}
		// The scheduler never places fewer than its minimum for a
		// deployment; one more instance asked for is one more placed.
		if len(placements) > need.Instances {
			placements = placements[:need.Instances]
		}
		out := make([]uuid.UUID, len(placements))
		for i, p := range placements {
			out[i] = p.NodeID
		}
		return out, nil
	}
}

// views holds the scheduler's node views between placements.
var views = sync.Pool{New: func() any { return new([]scheduler.Node) }}

// schedulerStatus is the scheduler's name for a node status; it keeps its
// own so that it stays a pure package, free of the database.
func schedulerStatus(s node.Status) string {
	switch s {
	case node.StatusActive:
		return scheduler.StatusActive
	case node.StatusDraining:
		return scheduler.StatusDraining
	case node.StatusDead:
		return scheduler.StatusDead
	}
	return string(s) // unknown: the scheduler treats it as not active
}
