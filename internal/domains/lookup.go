package domains

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// GetByName returns project's domain named name, in any spelling Normalize
// accepts; ErrNotFound when the project has no such domain, or name is no
// domain name at all.
func (s *Service) GetByName(ctx context.Context, project uuid.UUID, name string) (Domain, error) {
	n, err := Normalize(name)
	if err != nil {
		return Domain{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return newStore(s.pool).getByName(ctx, project, n)
}

// Page returns up to limit of project's domains with ids after after
// (uuid.Nil: from the first), oldest first.
func (s *Service) Page(ctx context.Context, project, after uuid.UUID, limit int32) ([]Domain, error) {
	return newStore(s.pool).page(ctx, project, after, limit)
}
