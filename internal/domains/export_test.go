package domains

import (
	"context"

	"github.com/google/uuid"
)

// ByID returns the domain whatever its project, for tests that look at a
// row the service keeps to its project.
func (s *Service) ByID(ctx context.Context, id uuid.UUID) (Domain, error) {
	return newStore(s.pool).get(ctx, id)
}
