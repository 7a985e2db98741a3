package domains

import (
	"time"

	"github.com/google/uuid"
)

// Status is where a domain is in its verification.
type Status string

const (
	// StatusPending: not proved yet; checks go on.
	StatusPending Status = "pending"
	// StatusVerified: proved to be the project's; the edge routes it.
	StatusVerified Status = "verified"
	// StatusFailed: given up, moved to another project, or no longer
	// pointing at the edge after Config.RecheckFailures re-verifications
	// in a row; only a check asked for by hand tries again.
	StatusFailed Status = "failed"
)

// Domain is a project's custom domain.
type Domain struct {
	ID                uuid.UUID
	ProjectID         uuid.UUID
	Name              string
	Status            Status
	VerificationToken string
	VerifiedAt        *time.Time
	LastCheckedAt     *time.Time
	FailureReason     *string
	// FailedRechecks counts the re-verifications of a verified domain that
	// failed in a row: it is still served until Config.RecheckFailures.
	FailedRechecks int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}
