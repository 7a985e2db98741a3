package build

import (
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
)

// Errors callers tell apart.
var (
	// ErrNotFound: no build with that id.
	ErrNotFound = errors.New("build not found")
	// ErrProjectNotFound: a build was requested for a project that does
	// not exist.
	ErrProjectNotFound = errors.New("project not found")
	// ErrHeld: another builder holds the build; Build.DeadlineAt says
	// until when, unless it renews its lease.
	ErrHeld = errors.New("build held by another builder")
	// ErrEnded: the build has already ended (succeeded, failed, cancelled).
	ErrEnded = errors.New("build already ended")
	// ErrLeaseLost: the builder's claim on the build is gone: the build was
	// cancelled, or another builder took it over after this one stalled.
	ErrLeaseLost = errors.New("build lease lost")
	// ErrDeploymentMoved: the build's deployment is no longer waiting for
	// it (cancelled, superseded).
	ErrDeploymentMoved = errors.New("deployment moved on")
)

// Build is one attempt at building a deployment.
type Build struct {
	ID            uuid.UUID
	DeploymentID  uuid.UUID
	Status        Status
	Attempt       int32
	BuilderID     *string // the builder that holds or held it
	DetectedKind  *string // how detection decided to build the tree
	DeadlineAt    *time.Time
	StartedAt     *time.Time
	FinishedAt    *time.Time
	FailureReason *string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func fromRow(r db.Build) Build {
	return Build{
		ID: r.ID, DeploymentID: r.DeploymentID, Status: Status(r.Status), Attempt: r.Attempt,
		BuilderID: r.BuilderID, DetectedKind: r.DetectedKind, DeadlineAt: r.DeadlineAt,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, FailureReason: r.FailureReason,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// Image is what a successful build pushed.
type Image struct {
	Repository string // host/repository
	Tag        string
	Digest     string
	Size       int64
}
