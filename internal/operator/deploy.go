// Package operator runs deployments: it places a deployment's instances on
// nodes, waits for them to be healthy, switches the project's traffic to it
// and retires the deployment it replaces after a grace period. It works
// from the task queue, so any number of operators share the work and no
// deployment is handled twice at once.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Queue is the task queue operators work.
const Queue = "deploy"

// DeployTask asks an operator to bring a built deployment to active.
type DeployTask struct {
	DeploymentID uuid.UUID `json:"deployment_id"`
}

// Kind implements queue.Task.
func (DeployTask) Kind() string { return "deploy" }

// InsertOpts make the task unique per deployment: a deployment is never
// handled by two operators at once.
func (DeployTask) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 25, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// Need is what one deployment asks of the cluster.
type Need struct {
	DeploymentID uuid.UUID
	Instances    int // how many more to place
	CPUMillis    int32
	MemoryMB     int32
	Avoid        []uuid.UUID // nodes already running this deployment
}

// Placer chooses nodes for need among nodes (the live, schedulable ones):
// one node id per instance, or an error saying why it cannot.
type Placer func(nodes []db.Node, need Need) ([]uuid.UUID, error)

// Policy tunes the lifecycle.
type Policy struct {
	MinReplicas       int           // never fewer instances than this (3)
	HealthyDeadline   time.Duration // a deployment not healthy this long after deploying started fails
	RetireGrace       time.Duration // how long the replaced deployment keeps running (5 min)
	HeartbeatDeadline time.Duration // nodes silent this long get nothing new
	Poll              time.Duration // how often a deploying deployment is looked at
}

// DefaultPolicy is the platform's: at least three instances, five minutes
// of grace for the old deployment.
var DefaultPolicy = Policy{MinReplicas: 3, HealthyDeadline: 2 * time.Minute, RetireGrace: 5 * time.Minute, HeartbeatDeadline: 30 * time.Second, Poll: 250 * time.Millisecond}

// Lifecycle moves deployments through deploying → active → retiring →
// stopped, or failed with a reason.
type Lifecycle struct {
	Pool   *pgxpool.Pool
	Place  Placer
	Policy Policy
	Log    *slog.Logger
}

// DeployWorker adapts Lifecycle.Deploy to the task queue.
type DeployWorker struct {
	river.WorkerDefaults[DeployTask]
	Lifecycle *Lifecycle
}

// Timeout bounds a deploy task by the health deadline, with room to spare.
func (w *DeployWorker) Timeout(*queue.Job[DeployTask]) time.Duration {
	return w.Lifecycle.Policy.HealthyDeadline + time.Minute
}

// Work implements queue.Worker. It steps the deployment until it is done,
// waiting Poll between steps in the task itself: handing the wait back to
// the queue (a snooze) would cost the queue's scheduling interval, seconds,
// on every step, and "healthy → active" must take milliseconds.
func (w *DeployWorker) Work(ctx context.Context, job *queue.Job[DeployTask]) error {
	for {
		err := w.Lifecycle.Deploy(ctx, job.Args.DeploymentID)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.Lifecycle.Policy.Poll):
		}
	}
}

// ErrCannotPlace wraps a placer's refusal.
var ErrCannotPlace = errors.New("cannot place instances")

// Deploy takes one step for a deploying deployment: place what is missing,
// then activate once every instance is healthy. While instances are on
// their way it snoozes the task (river.JobSnooze), so the operator holds no
// goroutine per waiting deployment.
func (l *Lifecycle) Deploy(ctx context.Context, depID uuid.UUID) error {
	q := db.New(l.Pool)
	dep, err := q.DeploymentGetByID(ctx, depID)
	if err != nil {
		return fmt.Errorf("deployment %s: %w", depID, err)
	}
	if dep.Status != "deploying" {
		return nil // already active, failed, or superseded
	}
	if dep.ImageID == nil {
		return l.fail(ctx, dep, "deployment has no image")
	}
	p, err := q.ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return err
	}
	replicas := max(int(dep.Replicas), l.Policy.MinReplicas)
	live, err := q.InstanceListLiveByDeployment(ctx, dep.ID)
	if err != nil {
		return err
	}
	if missing := replicas - len(live); missing > 0 {
		if err := l.place(ctx, dep, p, live, missing); err != nil {
			if errors.Is(err, ErrCannotPlace) {
				return l.fail(ctx, dep, err.Error())
			}
			return err
		}
		return river.JobSnooze(l.Policy.Poll)
	}

	healthy, waiting := 0, []string{}
	for _, in := range live {
		if in.State == "healthy" {
			healthy++
		} else {
			reason := in.State
			if in.StateReason != nil {
				reason += ": " + *in.StateReason
			}
			waiting = append(waiting, reason)
		}
	}
	if healthy < replicas {
		started := dep.CreatedAt
		if dep.DeployingAt != nil {
			started = *dep.DeployingAt
		}
		if time.Since(started) > l.Policy.HealthyDeadline {
			return l.fail(ctx, dep, fmt.Sprintf("%d of %d instances healthy after %s (%s)", healthy, replicas, l.Policy.HealthyDeadline, strings.Join(waiting, "; ")))
		}
		return river.JobSnooze(l.Policy.Poll)
	}
	return l.Activate(ctx, dep.ID)
}

func (l *Lifecycle) place(ctx context.Context, dep db.Deployment, p db.Project, live []db.Instance, missing int) error {
	q := db.New(l.Pool)
	nodes, err := q.NodeListSchedulable(ctx, time.Now().Add(-l.Policy.HeartbeatDeadline))
	if err != nil {
		return err
	}
	need := Need{DeploymentID: dep.ID, Instances: missing, CPUMillis: p.CpuMillis, MemoryMB: p.MemoryMb}
	for _, in := range live {
		need.Avoid = append(need.Avoid, in.NodeID)
	}
	chosen, err := l.Place(nodes, need)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCannotPlace, err)
	}
	byID := map[uuid.UUID]db.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	for _, nodeID := range chosen {
		_, err := nodeagent.CreateInstance(ctx, l.Pool, byID[nodeID], nodeagent.NewInstance{
			DeploymentID: dep.ID, Port: p.Port, CPUMillis: p.CpuMillis, MemoryMB: p.MemoryMb,
		})
		if errors.Is(err, nodeagent.ErrNoCapacity) {
			// Another operator filled the node meanwhile: the next step
			// places again on fresh numbers.
			l.Log.InfoContext(ctx, "node filled up meanwhile", "node_id", nodeID, "deployment_id", dep.ID)
			continue
		}
		if err != nil {
			return err
		}
	}
	l.Log.InfoContext(ctx, "instances placed", "deployment_id", dep.ID, "count", len(chosen))
	return nil
}

// Activate switches the project's traffic to the deployment, in one
// transaction: it becomes active, the project routes to it, and the
// deployment it replaces starts retiring (stopped after the grace period).
// A deployment older than the one already active does not take traffic
// back: it is retired at once. Rollback goes through here too.
func (l *Lifecycle) Activate(ctx context.Context, depID uuid.UUID) error {
	return pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		dep, err := q.DeploymentGetForUpdate(ctx, depID)
		if err != nil {
			return err
		}
		p, err := q.ProjectGetForUpdate(ctx, dep.ProjectID)
		if err != nil {
			return err
		}
		now := time.Now()
		if p.ActiveDeploymentID != nil && *p.ActiveDeploymentID != dep.ID {
			// UUIDv7 ids order by creation: the newer push wins.
			if dep.ID.String() < p.ActiveDeploymentID.String() && dep.Status != "retiring" && dep.Status != "stopped" {
				stop := now
				_, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: dep.ID, Status: "retiring", StopAt: &stop, FromStatuses: []string{"deploying"}})
				if err == nil {
					l.Log.InfoContext(ctx, "older deployment turned healthy after a newer one went live; retired", "deployment_id", dep.ID)
				}
				return ignoreNoRows(err)
			}
			stop := now.Add(l.Policy.RetireGrace)
			if _, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: *p.ActiveDeploymentID, Status: "retiring", StopAt: &stop, FromStatuses: []string{"active"}}); ignoreNoRows(err) != nil {
				return err
			}
		}
		if _, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: dep.ID, Status: "active", FromStatuses: []string{"deploying", "retiring"}}); err != nil {
			return fmt.Errorf("activate %s: %w", dep.ID, err)
		}
		if _, err := q.ProjectSetActiveDeployment(ctx, db.ProjectSetActiveDeploymentParams{ID: p.ID, ActiveDeploymentID: &dep.ID}); err != nil {
			return err
		}
		l.Log.InfoContext(ctx, "deployment active", "deployment_id", dep.ID, "project_id", p.ID)
		return nil
	})
}

// Rollback makes an earlier deployment of a project active again. One
// still retiring has its instances: traffic switches at once. One already
// stopped is deployed again (its instances re-created, health awaited)
// through the same path as a new push, by the deploy task enqueued in tx.
func (l *Lifecycle) Rollback(ctx context.Context, q *queue.Queue, depID uuid.UUID) error {
	dep, err := db.New(l.Pool).DeploymentGetByID(ctx, depID)
	if err != nil {
		return err
	}
	switch dep.Status {
	case "active":
		return nil
	case "retiring":
		return l.Activate(ctx, depID)
	case "stopped":
		return pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
			if _, err := db.New(tx).DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: depID, Status: "deploying", FromStatuses: []string{"stopped"}}); err != nil {
				return err
			}
			_, err := q.EnqueueTx(ctx, tx, DeployTask{DeploymentID: depID})
			return err
		})
	default:
		return fmt.Errorf("deployment %s is %s; only retiring or stopped deployments can be rolled back to", depID, dep.Status)
	}
}

// Retire stops the deployments whose grace period is over: their
// instances are asked to stop (the node agents do it), and the deployment
// is stopped. It returns how many it retired.
func (l *Lifecycle) Retire(ctx context.Context) (int, error) {
	due, err := db.New(l.Pool).DeploymentListRetiringDue(ctx, 100)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range due {
		err := pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
			q := db.New(tx)
			if _, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: d.ID, Status: "stopped", FromStatuses: []string{"retiring"}}); err != nil {
				return err
			}
			_, err := q.InstanceStopByDeployment(ctx, d.ID)
			return err
		})
		if ignoreNoRows(err) != nil {
			return n, err
		}
		if err == nil {
			n++
			l.Log.InfoContext(ctx, "deployment retired", "deployment_id", d.ID)
		}
	}
	return n, nil
}

func (l *Lifecycle) fail(ctx context.Context, dep db.Deployment, reason string) error {
	_, err := db.New(l.Pool).DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: dep.ID, Status: "failed", FailureReason: &reason, FromStatuses: []string{"deploying"}})
	if err == nil {
		l.Log.InfoContext(ctx, "deployment failed", "deployment_id", dep.ID, "reason", reason)
	}
	return ignoreNoRows(err)
}

func ignoreNoRows(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	return err
}

// AddInstance places one more instance of a deployment: on node when
// given (it must be active and have room), else wherever the placer puts it.
func (l *Lifecycle) AddInstance(ctx context.Context, depID uuid.UUID, node *uuid.UUID) (db.Instance, error) {
	q := db.New(l.Pool)
	dep, err := q.DeploymentGetByID(ctx, depID)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Instance{}, fmt.Errorf("%w: deployment %s", nodeagent.ErrNotFound, depID)
	}
	if err != nil {
		return db.Instance{}, err
	}
	p, err := q.ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return db.Instance{}, err
	}
	nodes, err := q.NodeListSchedulable(ctx, time.Now().Add(-l.Policy.HeartbeatDeadline))
	if err != nil {
		return db.Instance{}, err
	}
	var target *db.Node
	if node != nil {
		for i := range nodes {
			if nodes[i].ID == *node {
				target = &nodes[i]
			}
		}
		if target == nil {
			return db.Instance{}, fmt.Errorf("%w: node %s is not active or not heard from recently", nodeagent.ErrInvalid, *node)
		}
	} else {
		live, err := q.InstanceListLiveByDeployment(ctx, dep.ID)
		if err != nil {
			return db.Instance{}, err
		}
		need := Need{DeploymentID: dep.ID, Instances: 1, CPUMillis: p.CpuMillis, MemoryMB: p.MemoryMb}
		for _, in := range live {
			need.Avoid = append(need.Avoid, in.NodeID)
		}
		chosen, err := l.Place(nodes, need)
		if err != nil {
			return db.Instance{}, fmt.Errorf("%w: %v", ErrCannotPlace, err)
		}
		for i := range nodes {
			if nodes[i].ID == chosen[0] {
				target = &nodes[i]
			}
		}
	}
	return nodeagent.CreateInstance(ctx, l.Pool, *target, nodeagent.NewInstance{DeploymentID: dep.ID, Port: p.Port, CPUMillis: p.CpuMillis, MemoryMB: p.MemoryMb})
}

// SetNodeStatus drains ("draining") or undrains ("active") a node; healing
// moves a draining node's instances away.
func (l *Lifecycle) SetNodeStatus(ctx context.Context, nodeID uuid.UUID, status string) (db.Node, error) {
	if status != "draining" && status != "active" {
		return db.Node{}, fmt.Errorf("%w: status %q", nodeagent.ErrInvalid, status)
	}
	q := db.New(l.Pool)
	n, err := q.NodeGetByID(ctx, nodeID)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Node{}, fmt.Errorf("%w: node %s", nodeagent.ErrNotFound, nodeID)
	}
	if err != nil {
		return db.Node{}, err
	}
	if n.Status == "dead" {
		return db.Node{}, fmt.Errorf("%w: node %s is dead; it becomes active again when its agent registers", nodeagent.ErrInvalid, nodeID)
	}
	return q.NodeSetStatus(ctx, db.NodeSetStatusParams{ID: nodeID, Status: status})
}
