// Package build owns builds: the claim a builder holds on a deployment's
// build, its lease, and its outcome. It holds the typed status, the errors
// and the store of the builds table (pgx.ErrNoRows ends here).
package build

// Status is where a build is.
type Status string

const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)
