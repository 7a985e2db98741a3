package domains

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

func fromRow(r db.Domain) Domain {
	return Domain{
		ID: r.ID, ProjectID: r.ProjectID, Name: r.Name, Status: Status(r.Status), VerificationToken: r.VerificationToken,
		VerifiedAt: r.VerifiedAt, LastCheckedAt: r.LastCheckedAt, FailureReason: r.FailureReason,
		FailedRechecks: int(r.FailedRechecks), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func fromRows(rows []db.Domain) []Domain {
	return lo.Map(rows, func(r db.Domain, _ int) Domain { return fromRow(r) })
}

// errVerifiedElsewhere: another project has verified the name.
var errVerifiedElsewhere = errors.New("name verified by another project")

// store is the domains table, on a pool or a transaction. Rows become
// Domains and database errors the package's errors here.
type store struct{ q *db.Queries }

func newStore(d db.DBTX) store { return store{q: db.New(d)} }

// project checks that the project exists.
func (s store) project(ctx context.Context, project uuid.UUID) error {
	if _, err := s.q.ProjectGetByID(ctx, project); errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrProjectNotFound, project)
	} else if err != nil {
		return fmt.Errorf("project %s: %w", project, err)
	}
	return nil
}

func (s store) create(ctx context.Context, project uuid.UUID, name, token string) (Domain, error) {
	row, err := s.q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: project, Name: name, VerificationToken: token})
	switch pgErrorCode(err) {
	case "":
		return fromRow(row), nil
	case uniqueViolation:
		return Domain{}, fmt.Errorf("%w: the project already has %s", ErrExists, name)
	case foreignKeyViolation: // the project went away since we looked
		return Domain{}, fmt.Errorf("%w: %s", ErrProjectNotFound, project)
	default:
		return Domain{}, fmt.Errorf("add domain %s: %w", name, err)
	}
}

func (s store) get(ctx context.Context, domainID uuid.UUID) (Domain, error) {
	row, err := s.q.DomainGetByID(ctx, domainID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Domain{}, fmt.Errorf("%w: %s", ErrNotFound, domainID)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s: %w", domainID, err)
	}
	return fromRow(row), nil
}

func (s store) verifiedByName(ctx context.Context, name string) (Domain, error) {
	row, err := s.q.DomainGetVerifiedByName(ctx, name)
	if errors.Is(err, pgx.ErrNoRows) {
		return Domain{}, fmt.Errorf("%w: no verified domain %s", ErrNotFound, name)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("verified domain %s: %w", name, err)
	}
	return fromRow(row), nil
}

func (s store) listByProject(ctx context.Context, project uuid.UUID) ([]Domain, error) {
	rows, err := s.q.DomainListByProject(ctx, project)
	if err != nil {
		return nil, fmt.Errorf("list domains of %s: %w", project, err)
	}
	return fromRows(rows), nil
}

func (s store) remove(ctx context.Context, project, domainID uuid.UUID) error {
	n, err := s.q.DomainDelete(ctx, db.DomainDeleteParams{ID: domainID, ProjectID: project})
	if err != nil {
		return fmt.Errorf("remove domain %s: %w", domainID, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, domainID)
	}
	return nil
}

// lockByName returns every claim on name, locked in id order.
func (s store) lockByName(ctx context.Context, name string) ([]Domain, error) {
	rows, err := s.q.DomainLockByName(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("lock claims on %s: %w", name, err)
	}
	return fromRows(rows), nil
}

// setVerified marks the domain verified; errVerifiedElsewhere if another
// project has verified the name (the statement failed: in a transaction,
// run it in a savepoint).
func (s store) setVerified(ctx context.Context, domainID uuid.UUID) (Domain, error) {
	row, err := s.q.DomainSetVerified(ctx, domainID)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation && pgErr.ConstraintName == "domains_name_verified_idx" {
		return Domain{}, errVerifiedElsewhere
	}
	if err != nil {
		return Domain{}, fmt.Errorf("verify domain %s: %w", domainID, err)
	}
	return fromRow(row), nil
}

// setCheckFailed records a failed check: status stays pending while
// checks go on, failed to give up.
func (s store) setCheckFailed(ctx context.Context, domainID uuid.UUID, status Status, reason string) (Domain, error) {
	row, err := s.q.DomainSetCheckFailed(ctx, db.DomainSetCheckFailedParams{ID: domainID, Status: string(status), FailureReason: &reason})
	if err != nil {
		return Domain{}, fmt.Errorf("record check of domain %s: %w", domainID, err)
	}
	return fromRow(row), nil
}

func (s store) dueForCheck(ctx context.Context, minInterval, maxInterval time.Duration, limit int32) ([]Domain, error) {
	rows, err := s.q.DomainListDueForCheck(ctx, db.DomainListDueForCheckParams{
		MinIntervalSecs: minInterval.Seconds(), MaxIntervalSecs: maxInterval.Seconds(), MaxRows: limit,
	})
	if err != nil {
		return nil, fmt.Errorf("list domains due for a check: %w", err)
	}
	return fromRows(rows), nil
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// pgErrorCode is err's SQLSTATE, "" for no error, "?" for one that is not
// from Postgres.
func pgErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return "?"
}

func (s store) getByName(ctx context.Context, project uuid.UUID, name string) (Domain, error) {
	row, err := s.q.DomainGetByProjectAndName(ctx, db.DomainGetByProjectAndNameParams{ProjectID: project, Name: name})
	if errors.Is(err, pgx.ErrNoRows) {
		return Domain{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s: %w", name, err)
	}
	return fromRow(row), nil
}

func (s store) page(ctx context.Context, project, after uuid.UUID, limit int32) ([]Domain, error) {
	rows, err := s.q.DomainPageByProject(ctx, db.DomainPageByProjectParams{ProjectID: project, After: after, MaxRows: limit})
	if err != nil {
		return nil, fmt.Errorf("list domains of %s: %w", project, err)
	}
	return fromRows(rows), nil
}

// recordClaim remembers that project had name verified.
func (s store) recordClaim(ctx context.Context, project uuid.UUID, name string) error {
	if err := s.q.DomainClaimRecord(ctx, db.DomainClaimRecordParams{Name: name, ProjectID: project}); err != nil {
		return fmt.Errorf("record claim on %s: %w", name, err)
	}
	return nil
}

// otherClaim returns a name equal to or below registrable that another
// project than project ever had verified (name itself if it is one), or
// "" if there is none.
func (s store) otherClaim(ctx context.Context, project uuid.UUID, name, registrable string) (string, error) {
	other, err := s.q.DomainClaimGetOther(ctx, db.DomainClaimGetOtherParams{ProjectID: project, Registrable: registrable, Name: name})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("claims on %s: %w", registrable, err)
	}
	return other, nil
}

func (s store) dueForRecheck(ctx context.Context, interval time.Duration, limit int32) ([]Domain, error) {
	rows, err := s.q.DomainListDueForRecheck(ctx, db.DomainListDueForRecheckParams{IntervalSecs: interval.Seconds(), MaxRows: limit})
	if err != nil {
		return nil, fmt.Errorf("list verified domains due for a recheck: %w", err)
	}
	return fromRows(rows), nil
}

func (s store) setRecheckPassed(ctx context.Context, domainID uuid.UUID) (Domain, error) {
	row, err := s.q.DomainSetRecheckPassed(ctx, domainID)
	if err != nil {
		return Domain{}, fmt.Errorf("record recheck of domain %s: %w", domainID, err)
	}
	return fromRow(row), nil
}

func (s store) setRecheckFailed(ctx context.Context, domainID uuid.UUID, increment int32, reason string) (Domain, error) {
	row, err := s.q.DomainSetRecheckFailed(ctx, db.DomainSetRecheckFailedParams{ID: domainID, FailureReason: &reason, Increment: increment})
	if err != nil {
		return Domain{}, fmt.Errorf("record recheck of domain %s: %w", domainID, err)
	}
	return fromRow(row), nil
}
