package instance

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/node"
)

// The writes below are the operator's: the lifecycle of many instances at
// once, each guarded by state so every operator may run them concurrently.

// StopDeployment asks every instance of a deployment to stop; it returns how
// many it changed.
func (s Store) StopDeployment(ctx context.Context, deploymentID uuid.UUID) (int, error) {
	rows, err := s.q().InstanceStopByDeployment(ctx, deploymentID)
	if err != nil {
		return 0, fmt.Errorf("stop instances of %s: %w", deploymentID, err)
	}
	return len(rows), nil
}

// FailOnNode fails and stops every instance of a node declared dead: they
// will not come back by themselves. It returns the instances lost.
func (s Store) FailOnNode(ctx context.Context, nodeID uuid.UUID, reason string) ([]Instance, error) {
	rows, err := s.q().InstanceFailOnNode(ctx, db.InstanceFailOnNodeParams{NodeID: nodeID, Reason: reason})
	if err != nil {
		return nil, fmt.Errorf("fail instances on %s: %w", nodeID, err)
	}
	return fromRows(rows), nil
}

// StopFailed asks failed instances still meant to run to stop: they are
// replaced, never restarted.
func (s Store) StopFailed(ctx context.Context) (int, error) {
	rows, err := s.q().InstanceStopFailed(ctx)
	if err != nil {
		return 0, fmt.Errorf("stop failed instances: %w", err)
	}
	return len(rows), nil
}

// ReleaseCapacity gives back the reservations of instances that stopped for
// good (retired, replaced, lost), so their nodes can take new work.
func (s Store) ReleaseCapacity(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		released, err := db.New(tx).InstanceReleaseCapacity(ctx)
		if err != nil {
			return fmt.Errorf("release capacity: %w", err)
		}
		nodes := node.Store{DB: tx}
		for _, in := range released {
			if err := nodes.Release(ctx, in.NodeID, node.CPURequest(in.CpuMillis), in.MemoryMb); err != nil {
				return err
			}
		}
		return nil
	})
}
