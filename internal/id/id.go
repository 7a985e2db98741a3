// Package id generates Zeitwork's identifiers. Every row id is a UUIDv7
// generated here, in Go, never by a database default: v7 ids sort by creation
// time, so primary-key indexes stay append-mostly and log rows order by id.
package id

import (
	"fmt"

	"github.com/google/uuid"
)

// New returns a fresh UUIDv7.
func New() uuid.UUID {
	// NewV7 only fails when the system's random source fails, and since Go
	// 1.24 crypto/rand never returns an error on Linux: Must cannot panic.
	return uuid.Must(uuid.NewV7())
}

// Parse parses a textual UUID and insists that it is a version 7 id, so that
// an id from elsewhere (a v4 pasted by a user, say) is rejected at the edge.
func Parse(s string) (uuid.UUID, error) {
	u, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, err
	}
	if u.Version() != 7 {
		return uuid.Nil, &VersionError{Got: int(u.Version())}
	}
	return u, nil
}

// VersionError reports an id that is a valid UUID but not a UUIDv7.
type VersionError struct{ Got int }

func (e *VersionError) Error() string {
	return fmt.Sprintf("id is a UUIDv%d, want a UUIDv7", e.Got)
}
