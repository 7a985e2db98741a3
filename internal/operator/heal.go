package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// Heal keeps every active deployment at its count: nodes that stopped
// heartbeating are declared dead and their instances failed; failed
// instances are stopped; instances on draining nodes are moved; and each
// active deployment that is short gets replacements on other nodes. It is
// safe to run on every operator at once: each write is guarded by status,
// and capacity is reserved atomically per node.
func (l *Lifecycle) Heal(ctx context.Context) error {
	nodes, instances := l.nodes(), l.instances()
	stale, err := nodes.ListStale(ctx, time.Now().Add(-l.Policy.HeartbeatDeadline))
	if err != nil {
		return err
	}
	for _, n := range stale {
		dead, err := nodes.MarkDeadIfStale(ctx, n.ID, time.Now().Add(-l.Policy.HeartbeatDeadline))
		if err != nil {
			return err
		}
		if !dead {
			continue // it came back
		}
		lost, err := instances.FailOnNode(ctx, n.ID, fmt.Sprintf("node %s (%s) stopped heartbeating", n.Hostname, n.ID))
		if err != nil {
			return err
		}
		l.Log.WarnContext(ctx, "node declared dead", "node_id", n.ID, "instances_lost", len(lost))
	}
	if _, err := instances.StopFailed(ctx); err != nil {
		return err
	}
	if err := instances.ReleaseCapacity(ctx); err != nil {
		return err
	}

	active, err := l.deployments().ListByStatus(ctx, deployment.StatusActive, 10000)
	if err != nil {
		return err
	}
	all, err := nodes.List(ctx)
	if err != nil {
		return err
	}
	draining := map[uuid.UUID]bool{}
	for _, n := range all {
		if n.Status == node.StatusDraining {
			draining[n.ID] = true
		}
	}
	for _, dep := range active {
		if err := l.healDeployment(ctx, dep, draining); err != nil {
			l.Log.WarnContext(ctx, "heal deployment", "deployment_id", dep.ID, "err", err)
		}
	}
	return nil
}

func (l *Lifecycle) healDeployment(ctx context.Context, dep deployment.Deployment, draining map[uuid.UUID]bool) error {
	p, err := db.New(l.Pool).ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return fmt.Errorf("project %s: %w", dep.ProjectID, err)
	}
	want := replicas(dep)
	live, err := l.instances().ListLive(ctx, dep.ID)
	if err != nil {
		return err
	}
	var settled, leaving []instance.Instance // on nodes that stay, on draining nodes
	healthyElsewhere := 0
	for _, in := range live {
		if draining[in.NodeID] {
			leaving = append(leaving, in)
			continue
		}
		settled = append(settled, in)
		if in.State == instance.StateHealthy {
			healthyElsewhere++
		}
	}
	if missing := want - len(settled); missing > 0 {
		return l.place(ctx, dep, p, settled, missing)
	}
	// Replacements are up: the instances on draining nodes may go.
	if healthyElsewhere >= want {
		for _, in := range leaving {
			if _, err := l.instances().SetDesired(ctx, in.ID, instance.DesiredStopped); err != nil {
				return err
			}
		}
	}
	return nil
}
