package operator

import (
	"context"
	"errors"

	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// RollbackWorker adapts Lifecycle.Rollback to the task queue: the API
// asks, the operator, which owns the lifecycle, does it.
type RollbackWorker struct {
	river.WorkerDefaults[deployment.RollbackTask]
	Lifecycle *Lifecycle
	// Queue takes the deploy task of a stopped deployment rolled back to;
	// set once the queue this worker is registered with exists.
	Queue *queue.Queue
}

// Work implements queue.Worker. A deployment that can no longer be rolled
// back to (it moved on since the request) is not retried: the answer would
// not change.
func (w *RollbackWorker) Work(ctx context.Context, job *queue.Job[deployment.RollbackTask]) error {
	err := w.Lifecycle.Rollback(ctx, w.Queue, job.Args.DeploymentID)
	if errors.Is(err, deployment.ErrCannotRollBack) || errors.Is(err, deployment.ErrNotFound) || errors.Is(err, deployment.ErrMoved) {
		w.Lifecycle.Log.WarnContext(ctx, "rollback refused", "deployment_id", job.Args.DeploymentID, "err", err)
		return river.JobCancel(err)
	}
	return err
}
