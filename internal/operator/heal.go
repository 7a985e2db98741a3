package operator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
	if len(leaving) > 0 {
		return nil
	}
	if trimmed, err := l.trim(ctx, dep, settled, want); trimmed || err != nil {
		return err
	}
	if len(settled) == want && healthyElsewhere == want {
		return l.spread(ctx, dep, p, settled)
	}
	return nil
}

// trim stops one instance beyond the deployment's count once the others
// are enough healthy ones: the instance a spread moved away from, or one
// of two placed at once by two operators healing the same shortfall. It
// takes it from the node holding the most, an unhealthy one first there,
// and stops one per pass.
func (l *Lifecycle) trim(ctx context.Context, dep deployment.Deployment, settled []instance.Instance, want int) (bool, error) {
	if len(settled) <= want {
		return false, nil
	}
	held, healthy := map[uuid.UUID]int{}, 0
	for _, in := range settled {
		held[in.NodeID]++
		if in.State == instance.StateHealthy {
			healthy++
		}
	}
	victim := slices.MaxFunc(settled, func(a, b instance.Instance) int {
		if c := cmp.Compare(held[a.NodeID], held[b.NodeID]); c != 0 {
			return c
		}
		return cmp.Compare(b2i(a.State != instance.StateHealthy), b2i(b.State != instance.StateHealthy))
	})
	left := healthy
	if victim.State == instance.StateHealthy {
		left--
	}
	if left < want {
		return false, nil // wait until the newer ones are healthy
	}
	if _, err := l.instances().SetDesired(ctx, victim.ID, instance.DesiredStopped); err != nil {
		return false, err
	}
	l.Log.InfoContext(ctx, "instance beyond the count stopped", "deployment_id", dep.ID, "instance_id", victim.ID, "node_id", victim.NodeID, "on_that_node", held[victim.NodeID])
	return true, nil
}

// spread gives a deployment whose instances share a node one more
// instance on a node that holds none, when one can take it: the loss of a
// node holding two would take out two at once. Instances crowd together
// when workers were away while they were replaced (a restore, a network
// partition) and nothing spread them out again once the workers returned.
// trim stops one on the crowded node once the new one is healthy.
func (l *Lifecycle) spread(ctx context.Context, dep deployment.Deployment, p db.Project, settled []instance.Instance) error {
	held := map[uuid.UUID]bool{}
	for _, in := range settled {
		held[in.NodeID] = true
	}
	if len(held) == len(settled) {
		return nil
	}
	chosen, err := l.choose(ctx, dep, p, settled, 1)
	if errors.Is(err, instance.ErrCannotPlace) {
		return nil // no room anywhere: stay as it is
	}
	if err != nil {
		return err
	}
	if len(chosen) == 0 || held[chosen[0].ID] {
		return nil // every node that could take one already holds one
	}
	if _, err := l.instances().Create(ctx, chosen[0], newInstance(dep, p)); errors.Is(err, instance.ErrNoCapacity) {
		return nil // filled meanwhile: the next pass looks again
	} else if err != nil {
		return err
	}
	if l.Nodes != nil {
		l.Nodes.Reserve(chosen[0].ID, node.CPURequest(p.CpuMillis), p.MemoryMb)
	}
	l.Log.InfoContext(ctx, "instance spread to a node that held none", "deployment_id", dep.ID, "node_id", chosen[0].ID)
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
