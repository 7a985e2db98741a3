package build

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
)

// CancelDeployment stops a deployment that is still waiting for or in its
// build, in one transaction: its latest build ends as cancelled (the
// builder working it loses its lease at its next renewal and stops) and
// the deployment fails with reason. ErrDeploymentMoved: the deployment is
// past its build, and nothing changed.
func (s *Store) CancelDeployment(ctx context.Context, depID uuid.UUID, reason string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		q := db.New(tx)
		_, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
			ID: depID, Status: string(deployment.StatusFailed), FailureReason: &reason,
			FromStatuses: []string{string(deployment.StatusQueued), string(deployment.StatusBuilding)},
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrDeploymentMoved, depID)
		}
		if err != nil {
			return fmt.Errorf("deployment %s: %w", depID, err)
		}
		b, err := q.BuildGetLatestByDeployment(ctx, depID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // never built: failing the deployment is all there is
		}
		if err != nil {
			return fmt.Errorf("deployment %s: latest build: %w", depID, err)
		}
		if err := finish(ctx, q, b.ID, StatusCancelled, &reason); err != nil && !errors.Is(err, ErrEnded) {
			return err
		}
		return nil
	})
}
