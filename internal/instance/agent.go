package instance

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
)

// The writes below are a node agent's: what it observed of the instances
// the database assigns to its node.

// ListAssigned returns what the store's node converges: every instance
// meant to run there, and every one meant to stop that has not stopped yet.
func (s Store) ListAssigned(ctx context.Context) ([]Assignment, error) {
	rows, err := s.q().InstanceListForAgent(ctx, s.Node)
	if err != nil {
		return nil, fmt.Errorf("list instances of node %s: %w", s.Node, err)
	}
	out := make([]Assignment, len(rows))
	for i, r := range rows {
		out[i] = Assignment{
			Instance: fromRow(r.Instance), Image: r.ImageRepository + "@" + r.ImageDigest,
			ProjectID: r.ProjectID, HealthCheckPath: r.HealthCheckPath,
		}
	}
	return out, nil
}

// Report records the state an agent observed, with why ("" for no reason).
func (s Store) Report(ctx context.Context, id uuid.UUID, state State, reason string) (Instance, error) {
	var r *string
	if reason != "" {
		r = &reason
	}
	row, err := s.q().InstanceSetState(ctx, db.InstanceSetStateParams{ID: id, State: string(state), StateReason: r})
	if err != nil {
		return Instance{}, fmt.Errorf("report instance %s %s: %w", id, state, s.missing(err, id))
	}
	if decides(state) {
		// A hint only: the operator's deploy step polls underneath, so a
		// lost notification costs time, never correctness.
		if err := s.q().InstanceNotifyState(ctx, row.DeploymentID.String()); err != nil {
			return fromRow(row), fmt.Errorf("report instance %s %s: notify: %w", id, state, err)
		}
	}
	return fromRow(row), nil
}

// StatesChannel is where Report notifies, with the deployment's id, that
// one of its instances reached a state a deploy step decides on.
const StatesChannel = "zeitwork_instance_states"

// decides says whether a deploy step waiting on an instance acts on state:
// activate once all are healthy, replace what failed.
func decides(state State) bool {
	switch state {
	case StateHealthy, StateUnhealthy, StateFailed:
		return true
	}
	return false
}

// CountRestart records one more crash in a row.
func (s Store) CountRestart(ctx context.Context, id uuid.UUID) error {
	if _, err := s.q().InstanceIncrementRestartCount(ctx, id); err != nil {
		return fmt.Errorf("count restart of %s: %w", id, s.missing(err, id))
	}
	return nil
}

// ResetRestarts starts the crash backoff afresh: the instance is healthy
// again.
func (s Store) ResetRestarts(ctx context.Context, id uuid.UUID) error {
	if _, err := s.q().InstanceResetRestartCount(ctx, id); err != nil {
		return fmt.Errorf("reset restarts of %s: %w", id, s.missing(err, id))
	}
	return nil
}
