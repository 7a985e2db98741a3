package operator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type cluster struct {
	pool    *pgxpool.Pool
	l       *operator.Lifecycle
	project uuid.UUID
	image   uuid.UUID
}

func newCluster(t *testing.T, nodes int) *cluster {
	t.Helper()
	pool := testdb.New(t)
	ctx := context.Background()
	for i := 1; i <= nodes; i++ {
		if _, err := (node.Store{DB: pool}).Register(ctx, ipam.DefaultCluster, node.Registration{
			ID: id.New(), Hostname: fmt.Sprintf("w%d", i), InternalAddress: fmt.Sprintf("100.64.0.%d:8090", i), CPUMillis: 4000, MemoryMB: 8192,
		}); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{pool: pool, project: testdb.Project(t, pool), image: id.New()}
	if _, err := pool.Exec(ctx, `INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('b', 64))`, c.image, c.project); err != nil {
		t.Fatal(err)
	}
	policy := operator.DefaultPolicy
	policy.Poll = time.Millisecond
	c.l = &operator.Lifecycle{Pool: pool, Place: operator.SchedulerPlacer(policy.HeartbeatDeadline), Policy: policy, Log: zlog.Discard()}
	return c
}

// deployment creates a built deployment, ready for the operator.
func (c *cluster) deployment(t *testing.T) uuid.UUID {
	t.Helper()
	dep := id.New()
	if _, err := c.pool.Exec(context.Background(), `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3, now())`, dep, c.project, c.image); err != nil {
		t.Fatal(err)
	}
	return dep
}

// step runs one Deploy step and says whether it is waiting.
func (c *cluster) step(t *testing.T, dep uuid.UUID) bool {
	t.Helper()
	err := c.l.Deploy(context.Background(), dep)
	var snooze *river.JobSnoozeError
	if errors.As(err, &snooze) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

// healthy plays the node agents: every instance of dep reports healthy.
func (c *cluster) healthy(t *testing.T, dep uuid.UUID) {
	t.Helper()
	if _, err := c.pool.Exec(context.Background(), `UPDATE instances SET state = 'healthy' WHERE deployment_id = $1 AND desired_state = 'running'`, dep); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) status(t *testing.T, dep uuid.UUID) deployment.Deployment {
	t.Helper()
	d, err := deployment.Store{DB: c.pool}.Get(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (c *cluster) active(t *testing.T) *uuid.UUID {
	t.Helper()
	p, err := db.New(c.pool).ProjectGetByID(context.Background(), c.project)
	if err != nil {
		t.Fatal(err)
	}
	return p.ActiveDeploymentID
}

func TestDeploymentGoesActiveOnlyWhenHealthyOnDistinctNodes(t *testing.T) {
	c := newCluster(t, 3)
	dep := c.deployment(t)
	if !c.step(t, dep) {
		t.Fatal("placing did not wait for health")
	}
	ins, _ := instance.Store{DB: c.pool}.ListLive(context.Background(), dep)
	nodes := map[uuid.UUID]bool{}
	for _, in := range ins {
		nodes[in.NodeID] = true
	}
	if len(ins) != 3 || len(nodes) != 3 {
		t.Fatalf("%d instances on %d nodes, want 3 on 3", len(ins), len(nodes))
	}
	if !c.step(t, dep) || c.status(t, dep).Status != deployment.StatusDeploying || c.active(t) != nil {
		t.Fatal("activated before the instances were healthy")
	}
	c.healthy(t, dep)
	if c.step(t, dep) {
		t.Fatal("still waiting with every instance healthy")
	}
	if d := c.status(t, dep); d.Status != deployment.StatusActive || d.ActiveAt == nil {
		t.Fatalf("deployment %s", d.Status)
	}
	if a := c.active(t); a == nil || *a != dep {
		t.Fatalf("project routes to %v, want %s", a, dep)
	}
}

func TestNewDeploymentReplacesTheOldOneAfterTheGrace(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	first, second := c.deployment(t), c.deployment(t)
	for _, dep := range []uuid.UUID{first, second} {
		c.step(t, dep)
		c.healthy(t, dep)
		c.step(t, dep)
	}
	old := c.status(t, first)
	if old.Status != deployment.StatusRetiring || old.StopAt == nil || time.Until(*old.StopAt) < 4*time.Minute {
		t.Fatalf("replaced deployment: %s, stop at %v (want about 5 minutes from now)", old.Status, old.StopAt)
	}
	if a := c.active(t); *a != second {
		t.Fatal("traffic did not move to the new deployment")
	}
	if n, err := c.l.Retire(ctx); err != nil || n != 0 {
		t.Fatalf("retired %d before the grace period ended (%v)", n, err)
	}
	// The grace period passes.
	c.pool.Exec(ctx, `UPDATE deployments SET stop_at = now() - interval '1 second' WHERE id = $1`, first)
	if n, err := c.l.Retire(ctx); err != nil || n != 1 {
		t.Fatalf("retired %d, %v", n, err)
	}
	if d := c.status(t, first); d.Status != deployment.StatusStopped {
		t.Fatalf("old deployment %s", d.Status)
	}
	var running int
	c.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND desired_state = 'running'`, first).Scan(&running)
	if running != 0 {
		t.Fatalf("%d of the old deployment's instances still meant to run", running)
	}
	// The agents stop them; healing gives their capacity back.
	c.pool.Exec(ctx, `UPDATE instances SET state = 'stopped' WHERE deployment_id = $1`, first)
	if err := c.l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	var reserved, held int
	c.pool.QueryRow(ctx, `SELECT coalesce(sum(cpu_millis - free_cpu_millis), 0) FROM nodes`).Scan(&reserved)
	c.pool.QueryRow(ctx, `SELECT coalesce(sum((cpu_millis + 3) / 4), 0) FROM instances WHERE deployment_id = $1` /* node.CPURequest */, second).Scan(&held)
	if reserved != held {
		t.Fatalf("nodes reserve %dm CPU, the running deployment holds %dm: retired capacity not given back", reserved, held)
	}
}

func TestOlderDeploymentHealthyLateNeverTakesTrafficBack(t *testing.T) {
	c := newCluster(t, 3)
	older, newer := c.deployment(t), c.deployment(t)
	c.step(t, older)
	c.step(t, newer)
	c.healthy(t, newer)
	c.step(t, newer)
	c.healthy(t, older)
	c.step(t, older)
	if a := c.active(t); *a != newer {
		t.Fatal("the older deployment took the traffic back")
	}
	if d := c.status(t, older); d.Status != deployment.StatusRetiring {
		t.Fatalf("late older deployment is %s, want retiring", d.Status)
	}
}

func TestUnhealthyOrUnplaceableDeploymentsFailWithReason(t *testing.T) {
	c := newCluster(t, 3)
	c.l.Policy.HealthyDeadline = 50 * time.Millisecond
	dep := c.deployment(t)
	c.step(t, dep)
	c.pool.Exec(context.Background(), `UPDATE instances SET state = 'unhealthy', state_reason = 'exited with code 1' WHERE deployment_id = $1`, dep)
	time.Sleep(60 * time.Millisecond)
	c.step(t, dep)
	d := c.status(t, dep)
	if d.Status != deployment.StatusFailed || !strings.Contains(d.FailureReason, "0 of 3 instances healthy") || !strings.Contains(d.FailureReason, "exited with code 1") {
		t.Fatalf("%s %v", d.Status, d.FailureReason)
	}
	if c.active(t) != nil {
		t.Fatal("a failed deployment took traffic")
	}

	empty := newCluster(t, 0)
	dep = empty.deployment(t)
	empty.step(t, dep)
	if d := empty.status(t, dep); d.Status != deployment.StatusFailed || !strings.Contains(d.FailureReason, "cannot place 3 instances") {
		t.Fatalf("with no nodes: %s %v", d.Status, d.FailureReason)
	}
}

// TestHealthDeadlineCountsFromTheFirstStart: an image that takes longer to
// pull than the health deadline does not fail its deployment (it has the
// pull deadline); the health deadline then counts from the instance's
// first start, which its restarts do not move; and an image that never
// arrives fails it once the pull deadline is over.
func TestHealthDeadlineCountsFromTheFirstStart(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 3)
	c.l.Policy.HealthyDeadline, c.l.Policy.PullDeadline = time.Second, time.Minute
	agents := instance.Store{DB: c.pool}
	report := func(dep uuid.UUID, state instance.State, reason string) {
		t.Helper()
		for _, in := range c.live(t, dep) {
			if _, err := agents.Report(ctx, in.ID, state, reason); err != nil {
				t.Fatal(err)
			}
		}
	}
	dep := c.deployment(t)
	c.step(t, dep)
	report(dep, instance.StatePulling, "")
	time.Sleep(1200 * time.Millisecond) // longer than the health deadline
	if !c.step(t, dep) || c.status(t, dep).Status != deployment.StatusDeploying {
		t.Fatalf("failed while pulling: %+v", c.status(t, dep))
	}
	report(dep, instance.StateStarting, "")
	if !c.step(t, dep) {
		t.Fatalf("failed at its first start: %+v", c.status(t, dep))
	}
	for _, in := range c.live(t, dep) {
		if in.FirstStartedAt == nil || in.StartedAt == nil || !in.FirstStartedAt.Equal(*in.StartedAt) {
			t.Fatalf("first start not recorded: %v, %v", in.FirstStartedAt, in.StartedAt)
		}
	}
	// A crash loop: every restart is a new start, and the deadline stays.
	deadline := time.Now().Add(10 * time.Second)
	for c.step(t, dep) {
		if time.Now().After(deadline) {
			t.Fatal("a crash-looping deployment never failed")
		}
		report(dep, instance.StateUnhealthy, "exited with code 1")
		report(dep, instance.StateStarting, "")
		time.Sleep(20 * time.Millisecond)
	}
	if d := c.status(t, dep); d.Status != deployment.StatusFailed || !strings.Contains(d.FailureReason, "0 of 3 instances healthy after 1s") {
		t.Fatalf("crash loop: %s %q", d.Status, d.FailureReason)
	}

	c = newCluster(t, 3)
	c.l.Policy.PullDeadline = 100 * time.Millisecond
	agents = instance.Store{DB: c.pool}
	slow := c.deployment(t)
	c.step(t, slow)
	report(slow, instance.StatePulling, "")
	time.Sleep(150 * time.Millisecond)
	c.step(t, slow)
	if d := c.status(t, slow); d.Status != deployment.StatusFailed || !strings.Contains(d.FailureReason, "an image still not pulled after 100ms") {
		t.Fatalf("pull past its deadline: %s %q", d.Status, d.FailureReason)
	}
}

func TestRollback(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	q, err := queue.New(c.pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	first, second := c.deployment(t), c.deployment(t)
	for _, dep := range []uuid.UUID{first, second} {
		c.step(t, dep)
		c.healthy(t, dep)
		c.step(t, dep)
	}
	// Still retiring: traffic switches back at once.
	if err := c.l.Rollback(ctx, q, first); err != nil {
		t.Fatal(err)
	}
	if a := c.active(t); *a != first || c.status(t, second).Status != deployment.StatusRetiring {
		t.Fatalf("rollback to a retiring deployment: active %v, second %s", a, c.status(t, second).Status)
	}
	// Stopped: it is deployed again, instances re-created.
	c.pool.Exec(ctx, `UPDATE deployments SET stop_at = now() - interval '1 second' WHERE id = $1`, second)
	c.l.Retire(ctx)
	if err := c.l.Rollback(ctx, q, second); err != nil {
		t.Fatal(err)
	}
	if d := c.status(t, second); d.Status != deployment.StatusDeploying {
		t.Fatalf("rolled-back stopped deployment is %s", d.Status)
	}
	c.step(t, second)
	c.healthy(t, second)
	c.step(t, second)
	if a := c.active(t); *a != second {
		t.Fatal("rollback to a stopped deployment did not go live")
	}
	var live int
	c.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND desired_state = 'running'`, second).Scan(&live)
	if live != 3 {
		t.Fatalf("%d live instances after the rollback", live)
	}
	if err := c.l.Rollback(ctx, q, id.New()); err == nil {
		t.Fatal("rollback to an unknown deployment succeeded")
	}
}

// live returns the deployment's instances that count, by node.
func (c *cluster) live(t *testing.T, dep uuid.UUID) map[uuid.UUID]instance.Instance {
	t.Helper()
	ins, err := instance.Store{DB: c.pool}.ListLive(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]instance.Instance{}
	for _, in := range ins {
		out[in.NodeID] = in
	}
	if len(out) != len(ins) {
		t.Fatalf("two instances of one deployment on one node: %d instances, %d nodes", len(ins), len(out))
	}
	return out
}

func (c *cluster) activeDeployment(t *testing.T) uuid.UUID {
	t.Helper()
	dep := c.deployment(t)
	c.step(t, dep)
	c.healthy(t, dep)
	c.step(t, dep)
	return dep
}

func TestLostNodeInstancesAreReplacedElsewhere(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	dep := c.activeDeployment(t)
	before := c.live(t, dep)
	var lost uuid.UUID
	for node := range before {
		lost = node
		break
	}
	c.pool.Exec(ctx, `UPDATE nodes SET last_heartbeat_at = now() - interval '10 minutes' WHERE id = $1`, lost)
	start := time.Now()
	if err := c.l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("replacement placed %s after the node was found dead", time.Since(start).Round(time.Microsecond))
	n, _ := node.Store{DB: c.pool}.Get(ctx, lost)
	if n.Status != node.StatusDead {
		t.Fatalf("silent node is %s", n.Status)
	}
	old, _ := instance.Store{DB: c.pool}.Get(ctx, before[lost].ID)
	if old.State != instance.StateFailed || old.Desired != instance.DesiredStopped || !strings.Contains(old.StateReason, "stopped heartbeating") {
		t.Fatalf("instance on the dead node: %s/%s %v", old.State, old.Desired, old.StateReason)
	}
	after := c.live(t, dep)
	if len(after) != 3 {
		t.Fatalf("%d live instances after healing, want 3", len(after))
	}
	if _, ok := after[lost]; ok {
		t.Fatal("replacement placed on the dead node")
	}
	// Healing again changes nothing.
	if err := c.l.Heal(ctx); err != nil || len(c.live(t, dep)) != 3 {
		t.Fatalf("second heal: %v, %d live", err, len(c.live(t, dep)))
	}
}

func TestFailedInstanceIsReplaced(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	dep := c.activeDeployment(t)
	var victim instance.Instance
	for _, in := range c.live(t, dep) {
		victim = in
		break
	}
	c.pool.Exec(ctx, `UPDATE instances SET state = 'failed', state_reason = 'exited with code 1; gave up after 5 restarts' WHERE id = $1`, victim.ID)
	if err := c.l.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := (instance.Store{DB: c.pool}).Get(ctx, victim.ID); got.Desired != instance.DesiredStopped {
		t.Fatal("the failed instance is still meant to run")
	}
	if n := len(c.live(t, dep)); n != 3 {
		t.Fatalf("%d live instances, want 3", n)
	}
}

func TestDrainMovesInstancesThenEmptiesTheNode(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	dep := c.activeDeployment(t)
	var drained uuid.UUID
	for node := range c.live(t, dep) {
		drained = node
		break
	}
	c.pool.Exec(ctx, `UPDATE nodes SET status = 'draining' WHERE id = $1`, drained)
	c.l.Heal(ctx)
	if n := len(c.live(t, dep)); n != 4 {
		t.Fatalf("%d live instances while draining, want 3 + the one leaving", n)
	}
	// The draining node's instance stays until its replacement is healthy.
	c.l.Heal(ctx)
	if in := c.live(t, dep)[drained]; in.Desired != instance.DesiredRunning {
		t.Fatal("the draining instance stopped before its replacement was healthy")
	}
	c.healthy(t, dep)
	c.l.Heal(ctx)
	live := c.live(t, dep)
	if _, ok := live[drained]; ok || len(live) != 3 {
		t.Fatalf("after the replacement is healthy: %d live, drained node still has one: %v", len(live), ok)
	}
}

func TestDeployOfADeletedDeploymentIsDone(t *testing.T) {
	c := newCluster(t, 3)
	// A deployment whose project was deleted: the task is done rather
	// than retried until River gives up.
	if err := c.l.Deploy(context.Background(), id.New()); err != nil {
		t.Fatalf("Deploy of a deployment that is gone = %v, want nil", err)
	}
}

// The operator places from its in-memory view of the nodes; a view that is
// behind (a node registered after its last refresh) is refreshed before a
// deployment is declared unplaceable.
func TestPlacementFromTheNodeViewCatchesUpBeforeRefusing(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	c.l.Nodes = &node.View{Store: node.Store{DB: c.pool}, FullEvery: time.Hour}
	if err := c.l.Nodes.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := (node.Store{DB: c.pool}).Register(ctx, ipam.DefaultCluster, node.Registration{
		ID: id.New(), Hostname: "w3", InternalAddress: "100.64.0.3:8090", CPUMillis: 4000, MemoryMB: 8192,
	}); err != nil {
		t.Fatal(err)
	}
	dep := c.deployment(t)
	if !c.step(t, dep) {
		t.Fatalf("not placed: %+v", c.status(t, dep))
	}
	ins, _ := instance.Store{DB: c.pool}.ListLive(ctx, dep)
	nodes := map[uuid.UUID]bool{}
	for _, in := range ins {
		nodes[in.NodeID] = true
	}
	if len(ins) != 3 || len(nodes) != 3 {
		t.Fatalf("%d instances on %d nodes, want 3 on 3 (the third node came after the view's refresh)", len(ins), len(nodes))
	}
	// The reservations went into the view with the placements.
	view, err := c.l.Nodes.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range view {
		if n.FreeCPUMillis != 4000-250 {
			t.Fatalf("node %s has %dm free in the view, want the instance's request taken", n.Hostname, n.FreeCPUMillis)
		}
	}
}
