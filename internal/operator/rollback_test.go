package operator_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestRollbackTaskRollsBack works the task the API enqueues through a real
// queue, with the real lifecycle.
func TestRollbackTaskRollsBack(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	rollback := &operator.RollbackWorker{Lifecycle: c.l}
	ws := queue.NewWorkers(operator.Queue)
	queue.Register(ws, rollback)
	q, err := queue.New(c.pool, ws, config.Queue{Workers: 1, JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rollback.Queue = q
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
	first, second := c.deployment(t), c.deployment(t)
	for _, dep := range []uuid.UUID{first, second} {
		c.step(t, dep)
		c.healthy(t, dep)
		c.step(t, dep)
	}
	if a := c.active(t); *a != second {
		t.Fatalf("active %v, want the second deployment", a)
	}

	job, err := q.Enqueue(ctx, deployment.RollbackTask{DeploymentID: first})
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, q, job, rivertype.JobStateCompleted)
	if a := c.active(t); *a != first || c.status(t, second).Status != deployment.StatusRetiring {
		t.Fatalf("after the rollback task: active %v, second %s", a, c.status(t, second).Status)
	}

	// A deployment that cannot be rolled back to: the task is given up,
	// not retried.
	failed := c.deployment(t)
	if _, err := (deployment.Store{DB: c.pool}).SetStatus(ctx, failed, deployment.Move{To: deployment.StatusFailed, Reason: "build failed", From: []deployment.Status{deployment.StatusDeploying}}); err != nil {
		t.Fatal(err)
	}
	job, err = q.Enqueue(ctx, deployment.RollbackTask{DeploymentID: failed})
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, q, job, rivertype.JobStateCancelled)
	if a := c.active(t); *a != first {
		t.Fatalf("refused rollback changed the active deployment to %v", a)
	}
}

// waitTask waits, generously, for task job to reach state.
func waitTask(t *testing.T, q *queue.Queue, job int64, state queue.State) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := q.Status(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		if s.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %d is %s (%v), want %s", job, s.State, s.Errors, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
