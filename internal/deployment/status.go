// Package deployment owns deployments: one build of a project and the
// instances that run it, through their lifecycle. It holds the typed status,
// the errors and the store of the deployments table (pgx.ErrNoRows ends here).
package deployment

// Status is where a deployment is in its lifecycle.
type Status string

// queued → building → deploying → active → retiring → stopped, or failed
// with a reason from any state before active.
const (
	StatusQueued    Status = "queued"
	StatusBuilding  Status = "building"
	StatusDeploying Status = "deploying"
	StatusActive    Status = "active"
	StatusRetiring  Status = "retiring"
	StatusStopped   Status = "stopped"
	StatusFailed    Status = "failed"
)

// Statuses are all of them, in lifecycle order.
var Statuses = []Status{StatusQueued, StatusBuilding, StatusDeploying, StatusActive, StatusRetiring, StatusStopped, StatusFailed}
