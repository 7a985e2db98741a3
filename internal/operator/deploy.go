// Package operator runs deployments: it places a deployment's instances on
// nodes, waits for them to be healthy, switches the project's traffic to it
// and retires the deployment it replaces after a grace period (a preview
// replaces only the older preview of its branch, and never takes the
// project's traffic); it keeps active deployments at their count as nodes
// die or drain. It owns no table: it drives the deployment, instance and
// node stores. It works from the task queue, so any number of operators
// share the work and no deployment is handled twice at once.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/scheduler"
)

// Queue is the task queue operators work.
const Queue = deployment.Queue

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
	Instances    int   // how many more to place
	CPUMillis    int32 // per instance: the request a node reserves (node.CPURequest), not the limit
	MemoryMB     int32
	Avoid        []uuid.UUID // nodes already running this deployment
}

// Placer chooses nodes for need among nodes (the live, schedulable ones):
// one node id per instance, or an error saying why it cannot.
type Placer func(nodes []node.Node, need Need) ([]uuid.UUID, error)

// Policy tunes the lifecycle. The fewest instances a deployment runs is
// scheduler.MinReplicas.
type Policy struct {
	// A deployment fails when one of its instances is not healthy
	// HealthyDeadline after it first started, or still pulling its image
	// PullDeadline after deploying started (0: HealthyDeadline, counted
	// from deploying, pull included).
	HealthyDeadline   time.Duration
	PullDeadline      time.Duration
	RetireGrace       time.Duration // how long the replaced deployment keeps running (5 min)
	HeartbeatDeadline time.Duration // nodes silent this long get nothing new
	Poll              time.Duration // how often a deploying deployment is looked at
	// Slice is how long one run of a deploy task steps its deployment
	// before it hands the task back to the queue, available again at once
	// to this or another operator; 0 runs it until the deployment is done.
	Slice time.Duration
}

// DefaultPolicy is the platform's: five minutes of grace for the old
// deployment.
var DefaultPolicy = Policy{HealthyDeadline: 2 * time.Minute, PullDeadline: 10 * time.Minute, RetireGrace: 5 * time.Minute, HeartbeatDeadline: 30 * time.Second, Poll: 250 * time.Millisecond, Slice: 20 * time.Second}

// sliceMargin is the room a run of a deploy task has past its slice, for
// the step under way when the slice ends.
const sliceMargin = 10 * time.Second

// errSliceOver is the cause when a deploy task's run has had its slice.
var errSliceOver = errors.New("deploy task: slice over")

// Lifecycle moves deployments through deploying → active → retiring →
// stopped, or failed with a reason.
type Lifecycle struct {
	Pool   *pgxpool.Pool
	Place  Placer
	Policy Policy
	Log    *slog.Logger
	// Nodes, when set, is the in-memory view of the nodes placements read
	// instead of the table (see node.View); its owner refreshes it.
	Nodes *node.View
	// Wakeups, when set, wakes a deploy step as soon as its instances
	// report; its owner runs it.
	Wakeups *Wakeups
}

func (l *Lifecycle) deployments() deployment.Store { return deployment.Store{DB: l.Pool} }
func (l *Lifecycle) instances() instance.Store     { return instance.Store{DB: l.Pool} }
func (l *Lifecycle) nodes() node.Store             { return node.Store{DB: l.Pool} }

// schedulable is the nodes a placement may use: from the view when there is
// one (every node it holds: the scheduler leaves out the dead, draining and
// silent ones by the same rules), from the table otherwise (the schedulable
// ones only).
func (l *Lifecycle) schedulable(ctx context.Context) ([]node.Node, error) {
	if l.Nodes != nil {
		return l.Nodes.Nodes(ctx)
	}
	return l.nodes().ListSchedulable(ctx, time.Now().Add(-l.Policy.HeartbeatDeadline))
}

// refreshed brings the view up to date and returns its schedulable nodes.
func (l *Lifecycle) refreshed(ctx context.Context) ([]node.Node, error) {
	if err := l.Nodes.Refresh(ctx); err != nil {
		return nil, err
	}
	return l.schedulable(ctx)
}

// replicas is how many instances dep runs.
func replicas(dep deployment.Deployment) int {
	return max(int(dep.Replicas), scheduler.MinReplicas)
}

// DeployWorker adapts Lifecycle.Deploy to the task queue.
type DeployWorker struct {
	river.WorkerDefaults[DeployTask]
	Lifecycle *Lifecycle
}

// Timeout bounds one run of a deploy task: its slice, with room to spare.
// It is also how long the queue's rescuer leaves a running task alone, so
// it is what a deployment waits when the operator stepping it dies: a
// slice keeps that to seconds, where a run until done held the task for
// the whole health deadline.
func (w *DeployWorker) Timeout(*queue.Job[DeployTask]) time.Duration {
	if s := w.Lifecycle.Policy.Slice; s > 0 {
		return s + sliceMargin
	}
	return w.Lifecycle.Policy.PullDeadline + w.Lifecycle.Policy.HealthyDeadline + time.Minute
}

// Work implements queue.Worker. It steps the deployment until it is done,
// waiting between steps in the task itself (up to Poll, less when its
// instances report; see DeployUntilDone): handing the wait back to
// the queue (returning Deploy's snooze) would cost the queue's scheduling
// interval, seconds, on every step, and "healthy → active" must take
// milliseconds. The task holds one goroutine per deploying deployment,
// for one slice at a time (Policy.Slice); then it is snoozed for no time,
// which River makes available again at once.
func (w *DeployWorker) Work(ctx context.Context, job *queue.Job[DeployTask]) error {
	slice := w.Lifecycle.Policy.Slice
	if slice <= 0 {
		return w.Lifecycle.DeployUntilDone(ctx, job.Args.DeploymentID)
	}
	sctx, cancel := context.WithTimeoutCause(ctx, slice, errSliceOver)
	defer cancel()
	err := w.Lifecycle.DeployUntilDone(sctx, job.Args.DeploymentID)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(sctx), errSliceOver) {
		return river.JobSnooze(0)
	}
	return err
}

// DeployUntilDone steps depID until it is active, failed or superseded:
// again after Poll, or as soon as one of its instances reports healthy,
// unhealthy or failed when Wakeups is set.
func (l *Lifecycle) DeployUntilDone(ctx context.Context, depID uuid.UUID) error {
	var woken <-chan struct{} // nil: poll only
	if l.Wakeups != nil {
		// Subscribed before the first step, so a report between a step
		// and its wait is not missed.
		ch, cancel := l.Wakeups.Subscribe(depID)
		defer cancel()
		woken = ch
	}
	for {
		err := l.Deploy(ctx, depID)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			return err
		}
		t := time.NewTimer(l.Policy.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-woken:
			t.Stop()
		}
	}
}

// Deploy takes one step for a deploying deployment: place what is missing,
// then activate once every instance is healthy. While instances are on
// their way it returns a river.JobSnooze error asking to be called again
// after Poll; DeployWorker.Work waits and steps again itself.
func (l *Lifecycle) Deploy(ctx context.Context, depID uuid.UUID) error {
	dep, err := l.deployments().Get(ctx, depID)
	if errors.Is(err, deployment.ErrNotFound) {
		return nil // its project was deleted: nothing to place, now or on a retry
	}
	if err != nil {
		return err
	}
	if dep.Status != deployment.StatusDeploying {
		return nil // already active, failed, or superseded
	}
	if dep.ImageID == nil {
		return l.fail(ctx, dep, "deployment has no image")
	}
	p, err := db.New(l.Pool).ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return fmt.Errorf("project %s: %w", dep.ProjectID, err)
	}
	want := replicas(dep)
	live, err := l.instances().ListLive(ctx, dep.ID)
	if err != nil {
		return err
	}
	if missing := want - len(live); missing > 0 {
		if err := l.place(ctx, dep, p, live, missing); err != nil {
			if errors.Is(err, instance.ErrCannotPlace) {
				return l.fail(ctx, dep, err.Error())
			}
			return err
		}
		return river.JobSnooze(l.Policy.Poll)
	}

	healthy, waiting := 0, []string{}
	for _, in := range live {
		if in.State == instance.StateHealthy {
			healthy++
		} else {
			reason := string(in.State)
			if in.StateReason != "" {
				reason += ": " + in.StateReason
			}
			waiting = append(waiting, reason)
		}
	}
	if healthy < want {
		started := dep.CreatedAt
		if dep.DeployingAt != nil {
			started = *dep.DeployingAt
		}
		now := time.Now()
		for _, in := range live {
			switch l.overdue(in, started, now) {
			case overduePull:
				return l.fail(ctx, dep, fmt.Sprintf("%d of %d instances healthy: an image still not pulled after %s (%s)", healthy, want, l.Policy.PullDeadline, strings.Join(waiting, "; ")))
			case overdueHealth:
				return l.fail(ctx, dep, fmt.Sprintf("%d of %d instances healthy after %s (%s)", healthy, want, l.Policy.HealthyDeadline, strings.Join(waiting, "; ")))
			}
		}
		return river.JobSnooze(l.Policy.Poll)
	}
	return l.Activate(ctx, dep.ID)
}

type overdueKind int

const (
	onTime overdueKind = iota
	overduePull
	overdueHealth
)

// overdue says whether an instance of a deployment that started deploying
// at started has run out of time. Its image has PullDeadline to arrive;
// then it has HealthyDeadline from its first start, which a crash loop's
// restarts do not move. A big image on a slow registry is not failed
// while it is still arriving.
func (l *Lifecycle) overdue(in instance.Instance, started, now time.Time) overdueKind {
	if in.State == instance.StateHealthy {
		return onTime
	}
	if l.Policy.PullDeadline <= 0 {
		if now.Sub(started) > l.Policy.HealthyDeadline {
			return overdueHealth
		}
		return onTime
	}
	from := started
	switch {
	case in.FirstStartedAt != nil:
		from = *in.FirstStartedAt
	case in.State == instance.StatePending || in.State == instance.StatePulling:
		if now.Sub(started) > l.Policy.PullDeadline {
			return overduePull
		}
		return onTime
	}
	if now.Sub(from) > l.Policy.HealthyDeadline {
		return overdueHealth
	}
	return onTime
}

// choose asks the placer for n nodes for dep's instances, away from the
// nodes live ones run on.
func (l *Lifecycle) choose(ctx context.Context, dep deployment.Deployment, p db.Project, live []instance.Instance, n int) ([]node.Node, error) {
	nodes, err := l.schedulable(ctx)
	if err != nil {
		return nil, err
	}
	// The scheduler places by what a node reserves: the CPU request.
	need := Need{DeploymentID: dep.ID, Instances: n, CPUMillis: node.CPURequest(p.CpuMillis), MemoryMB: p.MemoryMb}
	for _, in := range live {
		need.Avoid = append(need.Avoid, in.NodeID)
	}
	chosen, err := l.Place(nodes, need)
	if l.Nodes != nil && (err != nil || len(lo.Uniq(chosen)) < len(chosen)) {
		// The view may be behind a node that registered or freed capacity
		// a moment ago: read what changed and try once more before telling
		// the user it cannot be placed, or doubling up on a node.
		if nodes, err = l.refreshed(ctx); err != nil {
			return nil, err
		}
		chosen, err = l.Place(nodes, need)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", instance.ErrCannotPlace, err)
	}
	out := make([]node.Node, len(chosen))
	for i, id := range chosen {
		// A scan per chosen node: cheaper than a map of every node for a
		// handful of lookups.
		out[i] = nodes[slices.IndexFunc(nodes, func(n node.Node) bool { return n.ID == id })]
	}
	return out, nil
}

func newInstance(dep deployment.Deployment, p db.Project) instance.New {
	return instance.New{DeploymentID: dep.ID, Port: p.Port, CPUMillis: p.CpuMillis, MemoryMB: p.MemoryMb}
}

func (l *Lifecycle) place(ctx context.Context, dep deployment.Deployment, p db.Project, live []instance.Instance, missing int) error {
	chosen, err := l.choose(ctx, dep, p, live, missing)
	if err != nil {
		return err
	}
	for _, n := range chosen {
		_, err := l.instances().Create(ctx, n, newInstance(dep, p))
		if errors.Is(err, instance.ErrNoCapacity) {
			// Another operator filled the node meanwhile: the next step
			// places again on fresh numbers.
			l.Log.InfoContext(ctx, "node filled up meanwhile", "node_id", n.ID, "deployment_id", dep.ID)
			continue
		}
		if err != nil {
			return err
		}
		if l.Nodes != nil {
			l.Nodes.Reserve(n.ID, node.CPURequest(p.CpuMillis), p.MemoryMb)
		}
	}
	l.Log.InfoContext(ctx, "instances placed", "deployment_id", dep.ID, "count", len(chosen))
	return nil
}

// Activate switches the project's traffic to the deployment, in one
// transaction: it becomes active, the project routes to it, and the
// deployment it replaces starts retiring (stopped after the grace period).
// A deployment older than the one already active does not take traffic
// back: it is retired at once. Rollback goes through here too. A preview
// is activated by activatePreview instead.
func (l *Lifecycle) Activate(ctx context.Context, depID uuid.UUID) error {
	return pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
		q, deps := db.New(tx), deployment.Store{DB: tx}
		dep, err := deps.GetForUpdate(ctx, depID)
		if err != nil {
			return err
		}
		// Locked for previews too: activations of one project, of any
		// branch, happen one at a time.
		p, err := q.ProjectGetForUpdate(ctx, dep.ProjectID)
		if err != nil {
			return fmt.Errorf("project %s: %w", dep.ProjectID, err)
		}
		if dep.Environment == deployment.EnvironmentPreview {
			return l.activatePreview(ctx, deps, dep)
		}
		now := time.Now()
		if p.ActiveDeploymentID != nil && *p.ActiveDeploymentID != dep.ID {
			// UUIDv7 ids order by creation: the newer push wins.
			if dep.ID.String() < p.ActiveDeploymentID.String() && dep.Status != deployment.StatusRetiring && dep.Status != deployment.StatusStopped {
				_, err := deps.SetStatus(ctx, dep.ID, deployment.Move{To: deployment.StatusRetiring, StopAt: now, From: []deployment.Status{deployment.StatusDeploying}})
				if err == nil {
					l.Log.InfoContext(ctx, "older deployment turned healthy after a newer one went live; retired", "deployment_id", dep.ID)
				}
				return ignoreMoved(err)
			}
			if _, err := deps.SetStatus(ctx, *p.ActiveDeploymentID, deployment.Move{To: deployment.StatusRetiring, StopAt: now.Add(l.Policy.RetireGrace), From: []deployment.Status{deployment.StatusActive}}); ignoreMoved(err) != nil {
				return err
			}
		}
		if _, err := deps.SetStatus(ctx, dep.ID, deployment.Move{To: deployment.StatusActive, From: []deployment.Status{deployment.StatusDeploying, deployment.StatusRetiring}}); err != nil {
			return fmt.Errorf("activate %s: %w", dep.ID, err)
		}
		if _, err := q.ProjectSetActiveDeployment(ctx, db.ProjectSetActiveDeploymentParams{ID: p.ID, ActiveDeploymentID: &dep.ID}); err != nil {
			return fmt.Errorf("route project %s to %s: %w", p.ID, dep.ID, err)
		}
		l.Log.InfoContext(ctx, "deployment active", "deployment_id", dep.ID, "project_id", p.ID)
		return nil
	})
}

// activatePreview makes a preview active beside the project's live
// deployment, which it never touches: it takes none of the project's hosts
// (the edge routes it at <deployment-id>.<apps-domain> only). Per branch,
// it is production's switch: the branch's older active preview retires
// after the grace period, and an older preview turning healthy after a
// newer one of its branch went live is retired at once.
func (l *Lifecycle) activatePreview(ctx context.Context, deps deployment.Store, dep deployment.Deployment) error {
	if dep.Status != deployment.StatusDeploying {
		// Retired meanwhile (its branch was deleted), or already active:
		// nothing of its branch changes.
		return nil
	}
	now := time.Now()
	active, err := deps.ListPreviews(ctx, dep.ProjectID, dep.Source.Ref, deployment.StatusActive)
	if err != nil {
		return err
	}
	// UUIDv7 ids order by creation: the newer push wins.
	if slices.ContainsFunc(active, func(a deployment.Deployment) bool { return a.ID.String() > dep.ID.String() }) {
		_, err := deps.SetStatus(ctx, dep.ID, deployment.Move{To: deployment.StatusRetiring, StopAt: now, From: []deployment.Status{deployment.StatusDeploying}})
		if err == nil {
			l.Log.InfoContext(ctx, "older preview turned healthy after a newer one of its branch went live; retired", "deployment_id", dep.ID, "ref", dep.Source.Ref)
		}
		return ignoreMoved(err)
	}
	for _, old := range active {
		if _, err := deps.SetStatus(ctx, old.ID, deployment.Move{To: deployment.StatusRetiring, StopAt: now.Add(l.Policy.RetireGrace), From: []deployment.Status{deployment.StatusActive}}); ignoreMoved(err) != nil {
			return err
		}
	}
	if _, err := deps.SetStatus(ctx, dep.ID, deployment.Move{To: deployment.StatusActive, From: []deployment.Status{deployment.StatusDeploying}}); err != nil {
		return fmt.Errorf("activate preview %s: %w", dep.ID, err)
	}
	l.Log.InfoContext(ctx, "preview active", "deployment_id", dep.ID, "project_id", dep.ProjectID, "ref", dep.Source.Ref)
	return nil
}

// Rollback makes an earlier deployment of a project active again. One
// still retiring has its instances: traffic switches at once. One already
// stopped is deployed again (its instances re-created, health awaited)
// through the same path as a new push, by the deploy task enqueued in tx.
func (l *Lifecycle) Rollback(ctx context.Context, q *queue.Queue, depID uuid.UUID) error {
	dep, err := l.deployments().Get(ctx, depID)
	if err != nil {
		return err
	}
	if dep.Environment == deployment.EnvironmentPreview {
		return fmt.Errorf("deployment %s: %w", depID, dep.CheckRollback())
	}
	switch dep.Status {
	case deployment.StatusActive:
		return nil
	case deployment.StatusRetiring:
		return l.Activate(ctx, depID)
	case deployment.StatusStopped:
		return pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
			if _, err := (deployment.Store{DB: tx}).SetStatus(ctx, depID, deployment.Move{To: deployment.StatusDeploying, From: []deployment.Status{deployment.StatusStopped}}); err != nil {
				return err
			}
			_, err := q.EnqueueTx(ctx, tx, DeployTask{DeploymentID: depID})
			return err
		})
	default:
		return fmt.Errorf("deployment %s: %w", depID, dep.CheckRollback())
	}
}

// Retire stops the deployments whose grace period is over: their
// instances are asked to stop (the node agents do it), and the deployment
// is stopped. It returns how many it retired.
func (l *Lifecycle) Retire(ctx context.Context) (int, error) {
	due, err := l.deployments().ListRetiringDue(ctx, 100)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range due {
		err := pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
			if _, err := (deployment.Store{DB: tx}).SetStatus(ctx, d.ID, deployment.Move{To: deployment.StatusStopped, From: []deployment.Status{deployment.StatusRetiring}}); err != nil {
				return err
			}
			_, err := instance.Store{DB: tx}.StopDeployment(ctx, d.ID)
			return err
		})
		if ignoreMoved(err) != nil {
			return n, err
		}
		if err == nil {
			n++
			l.Log.InfoContext(ctx, "deployment retired", "deployment_id", d.ID)
		}
	}
	return n, nil
}

func (l *Lifecycle) fail(ctx context.Context, dep deployment.Deployment, reason string) error {
	_, err := l.deployments().SetStatus(ctx, dep.ID, deployment.Move{To: deployment.StatusFailed, Reason: reason, From: []deployment.Status{deployment.StatusDeploying}})
	if err == nil {
		l.Log.InfoContext(ctx, "deployment failed", "deployment_id", dep.ID, "reason", reason)
	}
	return ignoreMoved(err)
}

// ignoreMoved drops the error of a status change another operator made
// first: the lifecycle has moved on without this one.
func ignoreMoved(err error) error {
	if errors.Is(err, deployment.ErrMoved) {
		return nil
	}
	return err
}

// AddInstance places one more instance of a deployment, for good (its
// count of replicas goes up by one): on node when given (it must be active
// and have room), else wherever the placer puts it.
func (l *Lifecycle) AddInstance(ctx context.Context, depID uuid.UUID, nodeID *uuid.UUID) (instance.Instance, error) {
	dep, err := l.deployments().Get(ctx, depID)
	if err != nil {
		return instance.Instance{}, err
	}
	p, err := db.New(l.Pool).ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return instance.Instance{}, fmt.Errorf("project %s: %w", dep.ProjectID, err)
	}
	var target node.Node
	if nodeID != nil {
		nodes, err := l.schedulable(ctx)
		if err != nil {
			return instance.Instance{}, err
		}
		cutoff := time.Now().Add(-l.Policy.HeartbeatDeadline)
		usable := func(n node.Node) bool {
			return n.ID == *nodeID && n.Status == node.StatusActive && n.LastHeartbeatAt.After(cutoff)
		}
		i := slices.IndexFunc(nodes, usable)
		if i < 0 && l.Nodes != nil {
			if nodes, err = l.refreshed(ctx); err != nil {
				return instance.Instance{}, err
			}
			i = slices.IndexFunc(nodes, usable)
		}
		if i < 0 {
			return instance.Instance{}, fmt.Errorf("%w: node %s is not active or not heard from recently", instance.ErrInvalid, *nodeID)
		}
		target = nodes[i]
	} else {
		live, err := l.instances().ListLive(ctx, dep.ID)
		if err != nil {
			return instance.Instance{}, err
		}
		chosen, err := l.choose(ctx, dep, p, live, 1)
		if err != nil {
			return instance.Instance{}, err
		}
		target = chosen[0]
	}
	// The count goes up with the instance, in one transaction: healing
	// would otherwise stop it as one beyond the deployment's count.
	var in instance.Instance
	err = pgx.BeginFunc(ctx, l.Pool, func(tx pgx.Tx) error {
		if _, err := (deployment.Store{DB: tx}).AddReplica(ctx, dep.ID); err != nil {
			return err
		}
		in, err = (instance.Store{DB: tx}).Create(ctx, target, newInstance(dep, p))
		return err
	})
	return in, err
}

// SetNodeStatus drains or undrains a node; healing moves a draining node's
// instances away.
func (l *Lifecycle) SetNodeStatus(ctx context.Context, nodeID uuid.UUID, status node.Status) (node.Node, error) {
	return l.nodes().SetStatus(ctx, nodeID, status)
}
