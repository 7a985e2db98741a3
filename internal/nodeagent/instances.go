package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
)

var (
	// ErrNotFound: no such instance on this node, or no such deployment.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request cannot be carried out as asked.
	ErrInvalid = errors.New("invalid request")
	// ErrNoCapacity: the node has not enough free CPU or memory.
	ErrNoCapacity = errors.New("not enough free capacity on this node")
)

// NewInstance asks for an instance of a deployment on this node.
type NewInstance struct {
	DeploymentID uuid.UUID
	Port         int32
	CPUMillis    int32
	MemoryMB     int32
}

// CreateInstance records an instance of d on node, reserving its capacity
// and giving it an address in the node's /64, all in one transaction; the
// database's trigger then wakes the agent. The deployment must have an
// image.
func CreateInstance(ctx context.Context, pool *pgxpool.Pool, node db.Node, req NewInstance) (db.Instance, error) {
	if req.Port < 1 || req.Port > 65535 {
		return db.Instance{}, fmt.Errorf("%w: port must be 1-65535", ErrInvalid)
	}
	if req.CPUMillis < 10 || req.MemoryMB < 16 {
		return db.Instance{}, fmt.Errorf("%w: cpu_millis must be at least 10 and memory_mb at least 16", ErrInvalid)
	}
	var out db.Instance
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		dep, err := q.DeploymentGetByID(ctx, req.DeploymentID)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: deployment %s", ErrNotFound, req.DeploymentID)
		}
		if err != nil {
			return err
		}
		if dep.ImageID == nil {
			return fmt.Errorf("%w: deployment %s has no image yet (status %s)", ErrInvalid, dep.ID, dep.Status)
		}
		if dep.Status == "stopped" || dep.Status == "failed" {
			return fmt.Errorf("%w: deployment %s is %s", ErrInvalid, dep.ID, dep.Status)
		}
		if _, err := q.NodeAllocate(ctx, db.NodeAllocateParams{ID: node.ID, CpuMillis: req.CPUMillis, MemoryMb: req.MemoryMB}); errors.Is(err, pgx.ErrNoRows) {
			return ErrNoCapacity
		} else if err != nil {
			return err
		}
		iid := id.New()
		addr := ipam.InstanceAddr(node.Ipv6Prefix, iid)
		for try := 0; ; try++ {
			// A savepoint, so that an address collision does not abort
			// the whole transaction.
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			out, err = db.New(sp).InstanceCreate(ctx, db.InstanceCreateParams{
				ID: iid, DeploymentID: dep.ID, NodeID: node.ID, ImageID: *dep.ImageID,
				Ipv6Address: addr, Port: req.Port, CpuMillis: req.CPUMillis, MemoryMb: req.MemoryMB,
			})
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.ConstraintName == "instances_ipv6_address_unique" && try < 16 {
				_ = sp.Rollback(ctx)
				addr = ipam.NextInstanceAddr(node.Ipv6Prefix, addr)
				continue
			}
			if err != nil {
				_ = sp.Rollback(ctx)
				return err
			}
			return sp.Commit(ctx)
		}
	})
	return out, err
}

// transitions says which desired states an instance may be asked for from
// its observed state. A stopped instance can be started again (rollback);
// a failed one cannot — it is replaced by a new instance.
var transitions = map[string][]string{
	"running": {"pending", "pulling", "starting", "healthy", "unhealthy", "stopped"},
	"stopped": {"pending", "pulling", "starting", "healthy", "unhealthy", "stopping", "stopped", "failed"},
}

// SetDesiredState asks an instance of this node to run or to stop.
func SetDesiredState(ctx context.Context, pool *pgxpool.Pool, nodeID, instanceID uuid.UUID, desired string) (db.Instance, error) {
	allowed, ok := transitions[desired]
	if !ok {
		return db.Instance{}, fmt.Errorf("%w: state must be running or stopped, not %q", ErrInvalid, desired)
	}
	var out db.Instance
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		in, err := q.InstanceGetForUpdate(ctx, instanceID)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && in.NodeID != nodeID) {
			return fmt.Errorf("%w: instance %s", ErrNotFound, instanceID)
		}
		if err != nil {
			return err
		}
		if !slices.Contains(allowed, in.State) {
			return fmt.Errorf("%w: instance %s is %s and cannot be set to %s", ErrInvalid, instanceID, in.State, desired)
		}
		out, err = q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: instanceID, DesiredState: desired})
		return err
	})
	return out, err
}

// DeleteInstance stops an instance; once it has stopped, its row goes and
// its capacity is given back. It reports whether the row is gone.
func DeleteInstance(ctx context.Context, pool *pgxpool.Pool, nodeID, instanceID uuid.UUID) (deleted bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		in, err := q.InstanceGetForUpdate(ctx, instanceID)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && in.NodeID != nodeID) {
			return fmt.Errorf("%w: instance %s", ErrNotFound, instanceID)
		}
		if err != nil {
			return err
		}
		if in.DesiredState != "stopped" {
			if _, err := q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: instanceID, DesiredState: "stopped"}); err != nil {
				return err
			}
		}
		if in.State != "stopped" && in.State != "failed" {
			return nil // the agent stops it; a later DELETE removes the row
		}
		if _, err := q.InstanceDelete(ctx, instanceID); err != nil {
			return err
		}
		if in.CapacityReleasedAt == nil { // the operator may have given it back already
			if _, err := q.NodeRelease(ctx, db.NodeReleaseParams{ID: nodeID, CpuMillis: in.CpuMillis, MemoryMb: in.MemoryMb}); err != nil {
				return err
			}
		}
		deleted = true
		return nil
	})
	return deleted, err
}
