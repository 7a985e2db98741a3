package instance

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
)

// Store reads and writes the instances table.
type Store struct {
	DB db.Conn // a pool, or a transaction to take part in
	// Node, when set, limits the store to that node's instances, as its
	// agent sees them: any other instance is ErrNotFound.
	Node uuid.UUID
}

func (s Store) q() *db.Queries { return db.New(s.DB) }

func (s Store) notFound(id uuid.UUID) error {
	if s.Node != uuid.Nil {
		return fmt.Errorf("%w: instance %s is not on this node", ErrNotFound, id)
	}
	return fmt.Errorf("%w: instance %s", ErrNotFound, id)
}

// visible reads an instance through q, ErrNotFound if it is not there or
// not on the store's node.
func (s Store) visible(ctx context.Context, id uuid.UUID, get func(context.Context, uuid.UUID) (db.Instance, error)) (db.Instance, error) {
	in, err := get(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && s.Node != uuid.Nil && in.NodeID != s.Node) {
		return db.Instance{}, s.notFound(id)
	}
	if err != nil {
		return db.Instance{}, fmt.Errorf("instance %s: %w", id, err)
	}
	return in, nil
}

// New asks for an instance of a deployment.
type New struct {
	DeploymentID uuid.UUID
	Port         int32
	CPUMillis    int32
	MemoryMB     int32
}

// Create records an instance of req.DeploymentID on n, reserving its
// capacity and giving it an address in the node's /64, all in one
// transaction; the database's trigger then wakes the node's agent. The
// deployment must have an image and must not have ended.
func (s Store) Create(ctx context.Context, n node.Node, req New) (Instance, error) {
	if req.Port < 1 || req.Port > 65535 {
		return Instance{}, fmt.Errorf("%w: port must be 1-65535", ErrInvalid)
	}
	if req.CPUMillis < 10 || req.MemoryMB < 16 {
		return Instance{}, fmt.Errorf("%w: cpu_millis must be at least 10 and memory_mb at least 16", ErrInvalid)
	}
	if s.Node != uuid.Nil && n.ID != s.Node {
		return Instance{}, fmt.Errorf("%w: node %s is not this store's node", ErrInvalid, n.ID)
	}
	var out db.Instance
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		dep, err := q.DeploymentGetByID(ctx, req.DeploymentID)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: deployment %s", ErrNotFound, req.DeploymentID)
		}
		if err != nil {
			return fmt.Errorf("deployment %s: %w", req.DeploymentID, err)
		}
		if dep.ImageID == nil {
			return fmt.Errorf("%w: deployment %s has no image yet (status %s)", ErrInvalid, dep.ID, dep.Status)
		}
		if st := deployment.Status(dep.Status); st == deployment.StatusStopped || st == deployment.StatusFailed {
			return fmt.Errorf("%w: deployment %s is %s", ErrInvalid, dep.ID, dep.Status)
		}
		// CPU is reserved at its request, memory in full (node.CPURequest).
		if err := (node.Store{DB: tx}).Allocate(ctx, n.ID, node.CPURequest(req.CPUMillis), req.MemoryMB); err != nil {
			return err
		}
		iid := id.New()
		addr := ipam.InstanceAddr(n.Prefix, iid)
		for try := 0; ; try++ {
			// A savepoint, so that an address collision does not abort
			// the whole transaction.
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			out, err = db.New(sp).InstanceCreate(ctx, db.InstanceCreateParams{
				ID: iid, DeploymentID: dep.ID, NodeID: n.ID, ImageID: *dep.ImageID,
				Ipv6Address: addr, Port: req.Port, CpuMillis: req.CPUMillis, MemoryMb: req.MemoryMB,
			})
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.ConstraintName == "instances_ipv6_address_unique" && try < 16 {
				_ = sp.Rollback(ctx)
				addr = ipam.NextInstanceAddr(n.Prefix, addr)
				continue
			}
			if err != nil {
				_ = sp.Rollback(ctx)
				return fmt.Errorf("create instance: %w", err)
			}
			return sp.Commit(ctx)
		}
	})
	if err != nil {
		return Instance{}, err
	}
	return fromRow(out), nil
}

// transitions says from which observed states an instance may be asked
// for each desired state. A stopped instance can be started again
// (rollback); a failed one cannot — it is replaced by a new instance.
var transitions = map[Desired][]State{
	DesiredRunning: {StatePending, StatePulling, StateStarting, StateHealthy, StateUnhealthy, StateStopped},
	DesiredStopped: {StatePending, StatePulling, StateStarting, StateHealthy, StateUnhealthy, StateStopping, StateStopped, StateFailed},
}

// SetDesired asks an instance to run or to stop.
func (s Store) SetDesired(ctx context.Context, id uuid.UUID, desired Desired) (Instance, error) {
	allowed, ok := transitions[desired]
	if !ok {
		return Instance{}, fmt.Errorf("%w: state must be running or stopped, not %q", ErrInvalid, desired)
	}
	var out db.Instance
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		in, err := s.visible(ctx, id, q.InstanceGetForUpdate)
		if err != nil {
			return err
		}
		if !slices.Contains(allowed, State(in.State)) {
			return fmt.Errorf("%w: instance %s is %s and cannot be set to %s", ErrInvalid, id, in.State, desired)
		}
		out, err = q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: id, DesiredState: string(desired)})
		if err != nil {
			return fmt.Errorf("set instance %s %s: %w", id, desired, err)
		}
		return nil
	})
	if err != nil {
		return Instance{}, err
	}
	return fromRow(out), nil
}

// Delete stops an instance; once it has stopped, its row goes and its
// capacity is given back to its node. It reports whether the row is gone.
func (s Store) Delete(ctx context.Context, id uuid.UUID) (deleted bool, err error) {
	err = pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		in, err := s.visible(ctx, id, q.InstanceGetForUpdate)
		if err != nil {
			return err
		}
		if Desired(in.DesiredState) != DesiredStopped {
			if _, err := q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: id, DesiredState: string(DesiredStopped)}); err != nil {
				return fmt.Errorf("stop instance %s: %w", id, err)
			}
		}
		if !State(in.State).Over() {
			return nil // the agent stops it; a later Delete removes the row
		}
		if _, err := q.InstanceDelete(ctx, id); err != nil {
			return fmt.Errorf("delete instance %s: %w", id, err)
		}
		if in.CapacityReleasedAt == nil { // the operator may have given it back already
			if err := (node.Store{DB: tx}).Release(ctx, in.NodeID, node.CPURequest(in.CpuMillis), in.MemoryMb); err != nil {
				return err
			}
		}
		deleted = true
		return nil
	})
	return deleted, err
}

// Get returns one instance.
func (s Store) Get(ctx context.Context, id uuid.UUID) (Instance, error) {
	in, err := s.visible(ctx, id, s.q().InstanceGetByID)
	if err != nil {
		return Instance{}, err
	}
	return fromRow(in), nil
}

// Filter narrows List; nil fields match everything.
type Filter struct {
	DeploymentID *uuid.UUID
	NodeID       *uuid.UUID
	Limit        int
}

// List returns instances newest first.
func (s Store) List(ctx context.Context, f Filter) ([]Instance, error) {
	if s.Node != uuid.Nil {
		f.NodeID = &s.Node
	}
	rows, err := s.q().InstanceList(ctx, db.InstanceListParams{DeploymentID: f.DeploymentID, NodeID: f.NodeID, MaxRows: int32(f.Limit)})
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return fromRows(rows), nil
}

// ListLive returns a deployment's instances that count towards its
// replicas: meant to run and not failed.
func (s Store) ListLive(ctx context.Context, deploymentID uuid.UUID) ([]Instance, error) {
	rows, err := s.q().InstanceListLiveByDeployment(ctx, deploymentID)
	if err != nil {
		return nil, fmt.Errorf("list live instances of %s: %w", deploymentID, err)
	}
	return fromRows(rows), nil
}

// missing turns a missing row into ErrNotFound.
func (s Store) missing(err error, id uuid.UUID) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return s.notFound(id)
	}
	return err
}
