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
	// StatusFailed: given up, or moved to another project; only a check
	// asked for by hand tries again.
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
	CreatedAt         time.Time
	UpdatedAt         time.Time
}
