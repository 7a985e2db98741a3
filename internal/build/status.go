// Package build owns builds: the claim a builder holds on a deployment's
// build, its lease, and its outcome. It holds the typed status, the errors
// and the store of the builds table (pgx.ErrNoRows ends here), together
// with the few deployment and image writes that must commit in the same
// transaction as a build's own: a deployment moves to building, deploying
// or failed only with the build that moves it.
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
