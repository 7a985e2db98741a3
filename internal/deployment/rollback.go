package deployment

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
)

// Queue is the task queue operators work: deploys and rollbacks.
const Queue = "deploy"

// ErrCannotRollBack: the deployment cannot be made active again.
var ErrCannotRollBack = errors.New("deployment cannot be rolled back to")

// RollbackTask asks an operator to make an earlier deployment of a
// project active again. It is the contract between whoever asks (the API)
// and the operator, which owns the lifecycle.
type RollbackTask struct {
	DeploymentID uuid.UUID `json:"deployment_id"`
}

// Kind implements queue.Task.
func (RollbackTask) Kind() string { return "rollback" }

// InsertOpts make the task unique per deployment: asking twice while the
// first is pending rolls back once.
func (RollbackTask) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// CheckRollback says why d cannot be rolled back to, wrapping
// ErrCannotRollBack, or nil. Only a production deployment that went live
// and has since been replaced (retiring, or stopped) has an image that ran
// as the project. A preview never did: it ran a branch the production
// branch may not have merged, so putting it on the project's hosts is a
// deploy of that commit (POST /v1/deployments), not a rollback.
func (d Deployment) CheckRollback() error {
	switch {
	case d.Environment == EnvironmentPreview:
		return fmt.Errorf("%w: it is a preview of branch %q; only production deployments can be rolled back to", ErrCannotRollBack, d.Branch())
	case d.Status != StatusRetiring && d.Status != StatusStopped:
		return fmt.Errorf("%w: it is %s; only retiring or stopped deployments can be", ErrCannotRollBack, d.Status)
	case d.ImageID == nil:
		return fmt.Errorf("%w: it has no image", ErrCannotRollBack)
	}
	return nil
}
