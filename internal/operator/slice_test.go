package operator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestDeployTaskRunsInSlices: a run of a deploy task whose instances are
// not healthy yet hands the task back after its slice, asking for no
// wait, and leaves the deployment deploying; the run after the instances
// report takes it to active. Its timeout, which is also how long a dead
// operator's task waits to be rescued, is the slice's, not the health
// deadline's.
func TestDeployTaskRunsInSlices(t *testing.T) {
	c := newCluster(t, 3)
	c.l.Policy.Slice = 300 * time.Millisecond
	w := &operator.DeployWorker{Lifecycle: c.l}
	dep := c.deployment(t)
	job := &queue.Job[operator.DeployTask]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1}, Args: operator.DeployTask{DeploymentID: dep}}

	err := w.Work(context.Background(), job)
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) || snooze.Duration != 0 {
		t.Fatalf("run with unhealthy instances returned %v, want a snooze of no time", err)
	}
	if d := c.status(t, dep); d.Status != deployment.StatusDeploying {
		t.Fatalf("after one slice the deployment is %s, want deploying", d.Status)
	}
	if n := len(c.live(t, dep)); n != 3 {
		t.Fatalf("after one slice %d instances are placed, want 3", n)
	}
	if got := w.Timeout(job); got >= c.l.Policy.HealthyDeadline {
		t.Fatalf("a deploy task's timeout is %s, not shorter than the health deadline %s", got, c.l.Policy.HealthyDeadline)
	}

	c.healthy(t, dep)
	if err := w.Work(context.Background(), job); err != nil {
		t.Fatalf("run with healthy instances: %v", err)
	}
	if d := c.status(t, dep); d.Status != deployment.StatusActive {
		t.Fatalf("deployment %s, want active", d.Status)
	}
}

// TestDeadOperatorsDeployTaskIsRescuedWithinASlice: an operator took a
// deploy task 40 s ago and died. An operator's queue (which leads the
// queue and so rescues) retries it and takes the deployment to active: with
// the default policy's slice the task is stuck after 30 s, where a task
// that ran until done waited out the health deadline and a minute (three
// minutes: test/chaos's TestKillOperatorMidDeploy timed out).
func TestDeadOperatorsDeployTaskIsRescuedWithinASlice(t *testing.T) {
	c := newCluster(t, 3)
	c.l.Policy.Slice = operator.DefaultPolicy.Slice
	ctx := context.Background()
	dep := c.deployment(t)
	c.step(t, dep)
	c.healthy(t, dep)

	ws := queue.NewWorkers(operator.Queue)
	queue.Register(ws, &operator.DeployWorker{Lifecycle: c.l})
	q, err := queue.New(c.pool, ws, config.Queue{Workers: 2, JobTimeout: time.Second, RescueAfter: time.Second}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	job, err := q.Enqueue(ctx, operator.DeployTask{DeploymentID: dep})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '40 seconds', attempted_by = '{dead-operator}' WHERE id = $1`, job); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	waitTask(t, q, job, rivertype.JobStateCompleted)
	if d := c.status(t, dep); d.Status != deployment.StatusActive {
		t.Fatalf("deployment %s after the rescued task, want active", d.Status)
	}
}
