package deployment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
)

var (
	// ErrNotFound: no deployment with that id.
	ErrNotFound = errors.New("deployment not found")
	// ErrMoved: the deployment was not in a status the change starts from;
	// someone else (another operator) moved it first.
	ErrMoved = errors.New("deployment moved on")
)

// Deployment is one build of a project and where it is in its lifecycle.
type Deployment struct {
	ID            uuid.UUID
	ProjectID     uuid.UUID
	Status        Status
	FailureReason string
	ImageID       *uuid.UUID // nil until its build succeeded
	Replicas      int32      // as asked; the scheduler raises it to its minimum
	Source        Source
	Environment   Environment
	CreatedBy     *uuid.UUID // nil for a push webhook's deployment
	PushedBy      string     // the GitHub login that pushed the commit; "" when not pushed
	CreatedAt     time.Time
	DeployingAt   *time.Time
	ActiveAt      *time.Time
	StopAt        *time.Time // when a retiring deployment stops
}

func fromRow(r db.Deployment) Deployment {
	var reason string
	if r.FailureReason != nil {
		reason = *r.FailureReason
	}
	return Deployment{
		ID: r.ID, ProjectID: r.ProjectID, Status: Status(r.Status), FailureReason: reason, ImageID: r.ImageID,
		Replicas: r.Replicas, Environment: Environment(r.Environment), CreatedBy: r.CreatedByUserID, PushedBy: deref(r.PushedBy), CreatedAt: r.CreatedAt, DeployingAt: r.DeployingAt, ActiveAt: r.ActiveAt, StopAt: r.StopAt,
		Source: Source{
			Type: SourceType(r.SourceType), CommitSHA: deref(r.GithubCommitSha), Ref: deref(r.GithubRef),
			CommitMessage: deref(r.CommitMessage), ArchiveKey: deref(r.SourceArchiveKey),
		},
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func fromRows(rows []db.Deployment) []Deployment {
	return lo.Map(rows, func(r db.Deployment, _ int) Deployment { return fromRow(r) })
}

// Store reads and writes the deployments table.
type Store struct {
	DB db.Conn // a pool, or a transaction to take part in
}

func (s Store) q() *db.Queries { return db.New(s.DB) }

// missing says "deployment not found: <id>" for a missing row, and names
// the deployment in any other error.
func missing(err error, id uuid.UUID) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return fmt.Errorf("deployment %s: %w", id, err)
}

// Get returns one deployment.
func (s Store) Get(ctx context.Context, id uuid.UUID) (Deployment, error) {
	row, err := s.q().DeploymentGetByID(ctx, id)
	if err != nil {
		return Deployment{}, missing(err, id)
	}
	return fromRow(row), nil
}

// AddReplica raises the deployment's count of instances by one: healing
// keeps it at the new count (and stops any instance beyond it).
func (s Store) AddReplica(ctx context.Context, id uuid.UUID) (Deployment, error) {
	row, err := s.q().DeploymentAddReplica(ctx, id)
	if err != nil {
		return Deployment{}, missing(err, id)
	}
	return fromRow(row), nil
}

// GetForUpdate returns one deployment, locked until the store's
// transaction ends.
func (s Store) GetForUpdate(ctx context.Context, id uuid.UUID) (Deployment, error) {
	row, err := s.q().DeploymentGetForUpdate(ctx, id)
	if err != nil {
		return Deployment{}, missing(err, id)
	}
	return fromRow(row), nil
}

// ListByStatus returns up to limit deployments in status, oldest first.
func (s Store) ListByStatus(ctx context.Context, status Status, limit int) ([]Deployment, error) {
	rows, err := s.q().DeploymentListByStatus(ctx, db.DeploymentListByStatusParams{Status: string(status), MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list %s deployments: %w", status, err)
	}
	return fromRows(rows), nil
}

// ListRetiringDue returns up to limit retiring deployments whose grace
// period is over, oldest first.
func (s Store) ListRetiringDue(ctx context.Context, limit int) ([]Deployment, error) {
	rows, err := s.q().DeploymentListRetiringDue(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list retiring deployments: %w", err)
	}
	return fromRows(rows), nil
}

// Move is one step of the lifecycle.
type Move struct {
	To   Status
	From []Status // the statuses it may be taken from
	// Reason is required for StatusFailed.
	Reason string
	// StopAt is required for StatusRetiring: when it stops.
	StopAt time.Time
}

// SetStatus moves a deployment to m.To if it is still in one of m.From,
// stamping that phase's time; ErrMoved when it is not (someone else moved
// it first). At most one production deployment per project is active:
// retire the old one first, in the same transaction.
func (s Store) SetStatus(ctx context.Context, id uuid.UUID, m Move) (Deployment, error) {
	p := db.DeploymentSetStatusParams{ID: id, Status: string(m.To), FromStatuses: make([]string, len(m.From))}
	for i, f := range m.From {
		p.FromStatuses[i] = string(f)
	}
	if m.To == StatusFailed {
		p.FailureReason = &m.Reason
	}
	if m.To == StatusRetiring {
		p.StopAt = &m.StopAt
	}
	row, err := s.q().DeploymentSetStatus(ctx, p)
	if errors.Is(err, pgx.ErrNoRows) {
		return Deployment{}, fmt.Errorf("%w: deployment %s is not %v", ErrMoved, id, m.From)
	}
	if err != nil {
		return Deployment{}, fmt.Errorf("set deployment %s %s: %w", id, m.To, err)
	}
	return fromRow(row), nil
}

// ListPreviews returns the previews of one branch (its ref,
// refs/heads/<branch>) of a project that are in one of statuses, oldest
// first.
func (s Store) ListPreviews(ctx context.Context, projectID uuid.UUID, ref string, statuses ...Status) ([]Deployment, error) {
	rows, err := s.q().DeploymentListPreviewsOfRef(ctx, db.DeploymentListPreviewsOfRefParams{
		ProjectID: projectID, GithubRef: &ref, Statuses: lo.Map(statuses, func(st Status, _ int) string { return string(st) }),
	})
	if err != nil {
		return nil, fmt.Errorf("previews of %s in project %s: %w", ref, projectID, err)
	}
	return fromRows(rows), nil
}

// RetirePreviews retires the deploying and active previews of one branch
// of a project, to stop at stopAt (the operator then stops their
// instances), and returns them. Queued and building ones are left to the
// caller, which cancels their builds.
func (s Store) RetirePreviews(ctx context.Context, projectID uuid.UUID, ref string, stopAt time.Time) ([]Deployment, error) {
	rows, err := s.q().DeploymentRetirePreviewsOfRef(ctx, db.DeploymentRetirePreviewsOfRefParams{ProjectID: projectID, GithubRef: &ref, StopAt: &stopAt})
	if err != nil {
		return nil, fmt.Errorf("retire previews of %s in project %s: %w", ref, projectID, err)
	}
	return fromRows(rows), nil
}
