package build

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
)

// DB is what a Store works on: a pool, or a transaction whose writes the
// store's join (its own transactions become savepoints).
type DB interface {
	db.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store is the builds table, and the deployment and image writes that
// commit with a build's.
type Store struct {
	db DB
}

// NewStore returns the store on d.
func NewStore(d DB) *Store { return &Store{db: d} }

func (s *Store) q() *db.Queries { return db.New(s.db) }

// Get returns build id.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (Build, error) {
	row, err := s.q().BuildGetByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Build{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Build{}, fmt.Errorf("build %s: %w", id, err)
	}
	return fromRow(row), nil
}

// Project returns the project a build is requested for.
func (s *Store) Project(ctx context.Context, id uuid.UUID) (db.Project, error) {
	p, err := s.q().ProjectGetByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Project{}, fmt.Errorf("%w: %s", ErrProjectNotFound, id)
	}
	if err != nil {
		return db.Project{}, fmt.Errorf("project %s: %w", id, err)
	}
	return p, nil
}

// Create records a deployment and its first build, queued, in one
// transaction. An empty d.Environment is production.
func (s *Store) Create(ctx context.Context, d db.DeploymentCreateParams) (db.Deployment, Build, error) {
	if d.Environment == "" {
		d.Environment = string(deployment.EnvironmentProduction)
	}
	var (
		dep db.Deployment
		b   Build
	)
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		q := db.New(tx)
		var err error
		if dep, err = q.DeploymentCreate(ctx, d); err != nil {
			return fmt.Errorf("create deployment: %w", err)
		}
		row, err := q.BuildCreate(ctx, db.BuildCreateParams{ID: id.New(), DeploymentID: dep.ID, Attempt: 1})
		if err != nil {
			return fmt.Errorf("create build: %w", err)
		}
		b = fromRow(row)
		return nil
	})
	return dep, b, err
}

// Claim gives build id to builderID until deadline, which the builder
// keeps extending with Renew while it works. A build whose deadline passed
// has lost its builder (the machine died), so another may take it over.
// When the build cannot be claimed, the error is ErrHeld (another builder
// holds it) or ErrEnded, with the build as it is.
func (s *Store) Claim(ctx context.Context, id uuid.UUID, builderID string, deadline time.Time) (Build, error) {
	row, err := s.q().BuildClaim(ctx, db.BuildClaimParams{ID: id, BuilderID: builderID, DeadlineAt: deadline})
	if err == nil {
		return fromRow(row), nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Build{}, fmt.Errorf("claim build %s: %w", id, err)
	}
	current, err := s.Get(ctx, id)
	if err != nil {
		return Build{}, err
	}
	if current.Status == StatusRunning && current.DeadlineAt != nil {
		return current, ErrHeld
	}
	return current, ErrEnded
}

// Renew extends builderID's claim on build id to deadline. ErrLeaseLost
// says the claim is gone: the build was cancelled or taken over, and must
// stop.
func (s *Store) Renew(ctx context.Context, id uuid.UUID, builderID string, deadline time.Time) error {
	n, err := s.q().BuildExtendDeadline(ctx, db.BuildExtendDeadlineParams{ID: id, BuilderID: builderID, DeadlineAt: deadline})
	if err != nil {
		return fmt.Errorf("renew build %s: %w", id, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Requeue gives builderID's build back after an infrastructure failure,
// for the task's retry.
func (s *Store) Requeue(ctx context.Context, id uuid.UUID, builderID string) error {
	if _, err := s.q().BuildRequeue(ctx, db.BuildRequeueParams{ID: id, BuilderID: builderID}); err != nil {
		return fmt.Errorf("requeue build %s: %w", id, err)
	}
	return nil
}

// SetDetectedKind records how the build's tree is built.
func (s *Store) SetDetectedKind(ctx context.Context, id uuid.UUID, kind string) error {
	if _, err := s.q().BuildSetDetectedKind(ctx, db.BuildSetDetectedKindParams{ID: id, DetectedKind: kind}); err != nil {
		return fmt.Errorf("build %s: record the detected kind: %w", id, err)
	}
	return nil
}

// Cancel ends build id as cancelled; ErrEnded if it had already ended.
func (s *Store) Cancel(ctx context.Context, id uuid.UUID) error {
	return finish(ctx, s.q(), id, StatusCancelled, nil)
}

func finish(ctx context.Context, q *db.Queries, id uuid.UUID, status Status, reason *string) error {
	_, err := q.BuildFinish(ctx, db.BuildFinishParams{ID: id, Status: string(status), FailureReason: reason})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrEnded, id)
	}
	if err != nil {
		return fmt.Errorf("finish build %s as %s: %w", id, status, err)
	}
	// The build's log ends with it: wake its followers (a deploy waiting
	// on the stream goes on at once) rather than leave them to their
	// poll. A wake-up that fails costs them that poll, never a line, and
	// the build has ended all the same.
	_ = q.BuildLogNotify(ctx, id.String())
	return nil
}

// StartDeployment moves the build's deployment to building (it may be
// there already, on a retry). ErrDeploymentMoved: the deployment is no
// longer waiting for a build.
func (s *Store) StartDeployment(ctx context.Context, b Build) (db.Deployment, error) {
	dep, err := s.q().DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
		ID: b.DeploymentID, Status: string(deployment.StatusBuilding),
		FromStatuses: []string{string(deployment.StatusQueued), string(deployment.StatusBuilding)},
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Deployment{}, fmt.Errorf("%w: %s", ErrDeploymentMoved, b.DeploymentID)
	}
	if err != nil {
		return db.Deployment{}, fmt.Errorf("deployment %s: %w", b.DeploymentID, err)
	}
	return dep, nil
}

// Succeed records a successful build in one transaction: the build
// succeeded, the image it pushed, the deployment pointed at the image and
// moved to deploying, then built (if not nil) with the transaction, to
// hand the deployment on. A build cancelled at the last moment records
// nothing; a deployment cancelled meanwhile keeps the image recorded but
// neither moves nor is handed on.
func (s *Store) Succeed(ctx context.Context, b Build, projectID uuid.UUID, img Image, built func(ctx context.Context, tx pgx.Tx, d db.Deployment, img db.Image) error) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := finish(ctx, q, b.ID, StatusSucceeded, nil); errors.Is(err, ErrEnded) {
			return nil
		} else if err != nil {
			return err
		}
		row, err := q.ImageUpsert(ctx, db.ImageUpsertParams{
			ID: id.New(), ProjectID: projectID, BuildID: &b.ID,
			Repository: img.Repository, Tag: img.Tag, Digest: img.Digest, SizeBytes: &img.Size,
		})
		if err != nil {
			return fmt.Errorf("record image of build %s: %w", b.ID, err)
		}
		if _, err := q.DeploymentSetImage(ctx, db.DeploymentSetImageParams{ID: b.DeploymentID, ImageID: row.ID}); err != nil {
			return fmt.Errorf("deployment %s: set image: %w", b.DeploymentID, err)
		}
		dep, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
			ID: b.DeploymentID, Status: string(deployment.StatusDeploying),
			FromStatuses: []string{string(deployment.StatusBuilding)},
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return fmt.Errorf("deployment %s: %w", b.DeploymentID, err)
		}
		if built != nil {
			return built(ctx, tx, dep, row)
		}
		return nil
	})
}

// Fail ends the build with status (failed or cancelled) and reason, and
// fails its deployment with the same reason unless it has moved on, in one
// transaction. A build that had already ended keeps its outcome.
func (s *Store) Fail(ctx context.Context, b Build, status Status, reason string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := finish(ctx, q, b.ID, status, &reason); err != nil && !errors.Is(err, ErrEnded) {
			return err
		}
		_, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
			ID: b.DeploymentID, Status: string(deployment.StatusFailed), FailureReason: &reason,
			FromStatuses: []string{string(deployment.StatusQueued), string(deployment.StatusBuilding)},
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return fmt.Errorf("deployment %s: %w", b.DeploymentID, err)
		}
		return nil
	})
}
