package project

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/node"
)

// ErrForbidden: the user sees the project but their role does not allow
// the change (members may not delete projects).
var ErrForbidden = errors.New("forbidden")

// Roles of organisation members (organisation_members.role).
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Deleted is what deleting a project removed.
type Deleted struct {
	Instances   int // rows removed; their nodes' agents stop the containers
	Deployments int
	Domains     int
}

// deleteAttempts bounds the retries of a delete that lost a deadlock (see
// Delete).
const deleteAttempts = 5

// Delete removes a project and everything that serves or builds it, in one
// transaction, for an owner or admin of its organisation (ErrForbidden for
// a member; ErrNotFound for anyone else).
//
// The rows go rather than being retired: a project has no "deleted" state,
// and instances keep their deployment with ON DELETE RESTRICT, so they are
// deleted first. Nothing is left running because of it:
//   - node agents stop and tear down every container whose row is gone
//     (their convergence stops what the database does not want); the
//     transaction wakes them, since a deleted row fires no trigger;
//   - the capacity the instances reserved is given back to their nodes in
//     the same transaction;
//   - the edge drops the project's host, its preview hosts and its domains
//     when the routes trigger fires for the deleted rows, and the names
//     are free for another project at once;
//   - a build in progress loses its row: renewing its lease fails and
//     finishing it records nothing, so it cannot bring a deployment back.
//     The builds are locked first, so a builder that is writing its result
//     finishes before the delete and is deleted with the rest.
//
// Other writers lock a project's rows in other orders (placing an instance
// reserves its node before it references its deployment), so a delete may
// lose a deadlock that Postgres breaks; it is retried.
func (s Store) Delete(ctx context.Context, user, project uuid.UUID) (Deleted, error) {
	p, err := s.Get(ctx, user, project)
	if err != nil {
		return Deleted{}, err
	}
	m, err := s.q().OrganisationMemberGet(ctx, db.OrganisationMemberGetParams{OrganisationID: p.OrganisationID, UserID: user})
	if errors.Is(err, pgx.ErrNoRows) { // left the organisation since
		return Deleted{}, fmt.Errorf("%w: %s", ErrNotFound, project)
	}
	if err != nil {
		return Deleted{}, fmt.Errorf("membership in %s: %w", p.OrganisationID, err)
	}
	if m.Role != RoleOwner && m.Role != RoleAdmin {
		return Deleted{}, fmt.Errorf("%w: only owners and admins of the organisation may delete its projects", ErrForbidden)
	}
	for attempt := 1; ; attempt++ {
		var d Deleted
		err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
			var err error
			d, err = deleteTx(ctx, tx, project)
			return err
		})
		if retryable(err) && attempt < deleteAttempts {
			continue
		}
		return d, err
	}
}

func deleteTx(ctx context.Context, tx pgx.Tx, project uuid.UUID) (Deleted, error) {
	q := db.New(tx)
	if _, err := q.ProjectLockBuilds(ctx, project); err != nil {
		return Deleted{}, fmt.Errorf("lock builds of %s: %w", project, err)
	}
	if _, err := q.ProjectGetForUpdate(ctx, project); errors.Is(err, pgx.ErrNoRows) {
		return Deleted{}, fmt.Errorf("%w: %s", ErrNotFound, project) // deleted meanwhile
	} else if err != nil {
		return Deleted{}, fmt.Errorf("lock project %s: %w", project, err)
	}
	deps, err := q.ProjectLockDeployments(ctx, project)
	if err != nil {
		return Deleted{}, fmt.Errorf("lock deployments of %s: %w", project, err)
	}
	doms, err := q.DomainListByProject(ctx, project)
	if err != nil {
		return Deleted{}, fmt.Errorf("domains of %s: %w", project, err)
	}
	gone, err := q.ProjectDeleteInstances(ctx, project)
	if err != nil {
		return Deleted{}, fmt.Errorf("delete instances of %s: %w", project, err)
	}
	// Give back what is still reserved, node by node in id order (the
	// order other multi-node writers lock them in).
	type reserved struct{ cpu, mem int32 }
	held := map[uuid.UUID]reserved{}
	var nodes []uuid.UUID
	for _, in := range gone {
		if _, ok := held[in.NodeID]; !ok {
			nodes = append(nodes, in.NodeID)
		}
		r := held[in.NodeID]
		if in.CapacityReleasedAt == nil {
			r.cpu, r.mem = r.cpu+node.CPURequest(in.CpuMillis), r.mem+in.MemoryMb
		}
		held[in.NodeID] = r
	}
	slices.SortFunc(nodes, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	for _, n := range nodes {
		if r := held[n]; r.cpu > 0 || r.mem > 0 {
			if err := (node.Store{DB: tx}).Release(ctx, n, r.cpu, r.mem); err != nil {
				return Deleted{}, err
			}
		}
	}
	if len(nodes) > 0 {
		if err := q.ProjectNotifyNodes(ctx, nodes); err != nil {
			return Deleted{}, fmt.Errorf("wake the nodes of %s: %w", project, err)
		}
	}
	if _, err := q.ProjectDelete(ctx, project); err != nil {
		return Deleted{}, fmt.Errorf("delete project %s: %w", project, err)
	}
	return Deleted{Instances: len(gone), Deployments: len(deps), Domains: len(doms)}, nil
}

// retryable: the transaction lost to a concurrent writer and may simply
// run again: a deadlock Postgres broke, or a row (an instance being
// placed) that appeared between reading and deleting.
func retryable(err error) bool {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return false
	}
	switch pg.Code {
	case "40P01", "40001", "23001", "23503": // deadlock, serialization, restrict, foreign key
		return true
	}
	return false
}
