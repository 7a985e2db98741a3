package deployment

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
)

// Visible is a deployment as a member of its project's organisation sees
// it, with what the listing shows next to it.
type Visible struct {
	Deployment
	ProjectSlug string
	// Framework is what its latest build detected; "" until one did.
	Framework string
}

// GetForMember returns the deployment when user belongs to the
// organisation owning its project. One the user may not see is
// ErrNotFound, exactly like one that does not exist, so that its existence
// never leaks.
func (s Store) GetForMember(ctx context.Context, user, id uuid.UUID) (Visible, error) {
	r, err := s.q().DeploymentGetForMember(ctx, db.DeploymentGetForMemberParams{ID: id, UserID: user})
	if errors.Is(err, pgx.ErrNoRows) {
		return Visible{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Visible{}, fmt.Errorf("deployment %s: %w", id, err)
	}
	return Visible{Deployment: fromRow(r.Deployment), ProjectSlug: r.ProjectSlug, Framework: r.DetectedKind}, nil
}

// MemberFilter narrows ListForMember; zero fields do not filter.
type MemberFilter struct {
	Project     *uuid.UUID
	Environment Environment
}

// ListForMember returns up to limit of the deployments user may see that
// match f, newest first, with ids before before (uuid.Nil: from the newest).
func (s Store) ListForMember(ctx context.Context, user uuid.UUID, f MemberFilter, before uuid.UUID, limit int32) ([]Visible, error) {
	var env *string
	if f.Environment != "" {
		env = lo.ToPtr(string(f.Environment))
	}
	var from *uuid.UUID
	if before != uuid.Nil {
		from = &before
	}
	var rows []db.DeploymentListForMemberRow
	var err error
	if f.Project != nil {
		var own []db.DeploymentListForMemberOfProjectRow
		own, err = s.q().DeploymentListForMemberOfProject(ctx, db.DeploymentListForMemberOfProjectParams{
			UserID: user, ProjectID: *f.Project, Environment: env, Before: from, Max: limit,
		})
		for _, r := range own {
			rows = append(rows, db.DeploymentListForMemberRow(r))
		}
	} else {
		rows, err = s.q().DeploymentListForMember(ctx, db.DeploymentListForMemberParams{UserID: user, Environment: env, Before: from, Max: limit})
	}
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	out := make([]Visible, len(rows))
	for i, r := range rows {
		out[i] = Visible{Deployment: fromRow(r.Deployment), ProjectSlug: r.ProjectSlug, Framework: r.DetectedKind}
	}
	return out, nil
}
