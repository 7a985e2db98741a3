package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
)

// Heal keeps every active deployment at its count: nodes that stopped
// heartbeating are declared dead and their instances failed; failed
// instances are stopped; instances on draining nodes are moved; and each
// active deployment that is short gets replacements on other nodes. It is
// safe to run on every operator at once: each write is guarded by status,
// and capacity is reserved atomically per node.
func (l *Lifecycle) Heal(ctx context.Context) error {
	q := db.New(l.Pool)
	stale, err := q.NodeListStale(ctx, time.Now().Add(-l.Policy.HeartbeatDeadline))
	if err != nil {
		return err
	}
	for _, n := range stale {
		if _, err := q.NodeMarkDeadIfStale(ctx, db.NodeMarkDeadIfStaleParams{ID: n.ID, HeartbeatBefore: time.Now().Add(-l.Policy.HeartbeatDeadline)}); errors.Is(err, pgx.ErrNoRows) {
			continue // it came back
		} else if err != nil {
			return err
		}
		lost, err := q.InstanceFailOnNode(ctx, db.InstanceFailOnNodeParams{NodeID: n.ID, Reason: fmt.Sprintf("node %s (%s) stopped heartbeating", n.Hostname, n.ID)})
		if err != nil {
			return err
		}
		l.Log.WarnContext(ctx, "node declared dead", "node_id", n.ID, "instances_lost", len(lost))
	}
	if _, err := q.InstanceStopFailed(ctx); err != nil {
		return err
	}
	if err := l.releaseCapacity(ctx); err != nil {
		return err
	}

	active, err := q.DeploymentListByStatus(ctx, db.DeploymentListByStatusParams{Status: "active", MaxRows: 10000})
	if err != nil {
		return err
	}
	nodes, err := q.NodeList(ctx)
	if err != nil {
		return err
	}
	draining := map[[16]byte]bool{}
	for _, n := range nodes {
		if n.Status == "draining" {
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

func (l *Lifecycle) healDeployment(ctx context.Context, dep db.Deployment, draining map[[16]byte]bool) error {
	q := db.New(l.Pool)
	p, err := q.ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return err
	}
	replicas := max(int(dep.Replicas), l.Policy.MinReplicas)
	live, err := q.InstanceListLiveByDeployment(ctx, dep.ID)
	if err != nil {
		return err
	}
	var settled, leaving []db.Instance // on nodes that stay, on draining nodes
	healthyElsewhere := 0
	for _, in := range live {
		if draining[in.NodeID] {
			leaving = append(leaving, in)
			continue
		}
		settled = append(settled, in)
		if in.State == "healthy" {
			healthyElsewhere++
		}
	}
	if missing := replicas - len(settled); missing > 0 {
		return l.place(ctx, dep, p, settled, missing)
	}
	// Replacements are up: the instances on draining nodes may go.
	if healthyElsewhere >= replicas {
		for _, in := range leaving {
			if _, err := q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: in.ID, DesiredState: "stopped"}); err != nil {
				return err
			}
		}
	}
	return nil
}

// releaseCapacity gives back the reservations of instances that stopped for
// good (retired, replaced, lost), so their nodes can take new work.
func (l *Lifecycle) releaseCapacity(ctx context.Context) error {
	return pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		released, err := q.InstanceReleaseCapacity(ctx)
		if err != nil {
			return err
		}
		for _, in := range released {
			if _, err := q.NodeRelease(ctx, db.NodeReleaseParams{ID: in.NodeID, CpuMillis: in.CpuMillis, MemoryMb: in.MemoryMb}); err != nil {
				return err
			}
		}
		return nil
	})
}
