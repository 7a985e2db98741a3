package project

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// ErrNotAssigned: the instance does not exist or is not placed on the node
// that asks for it. One error for both, so that a node learns nothing about
// other nodes' instances.
var ErrNotAssigned = errors.New("instance not assigned to this node")

// ErrUndecryptable: a variable's value does not open with the keys given
// (its key was dropped from the ring, or the row was tampered with).
var ErrUndecryptable = errors.New("cannot be decrypted")

// InstanceEnvironment decrypts the variables of one instance for the node
// it is placed on. The control plane calls it on a node's behalf, so that
// a node holds no key and can read only the secrets of what it runs: a
// compromised node exposes its own tenants, not every project's.
func InstanceEnvironment(ctx context.Context, conn db.Conn, keys *secret.Ring, nodeID, instanceID uuid.UUID) (map[string]string, error) {
	q := db.New(conn)
	in, err := q.InstanceGetByID(ctx, instanceID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && in.NodeID != nodeID) {
		return nil, fmt.Errorf("%w: %s", ErrNotAssigned, instanceID)
	}
	if err != nil {
		return nil, fmt.Errorf("instance environment: %w", err)
	}
	vars, err := q.EnvironmentVariableListForDeployment(ctx, in.DeploymentID)
	if err != nil {
		return nil, fmt.Errorf("instance environment: %w", err)
	}
	env := make(map[string]string, len(vars))
	for _, v := range vars {
		if keys == nil {
			return nil, fmt.Errorf("%w: variable %s cannot be decrypted", ErrNoKeys, v.Name)
		}
		plain, err := keys.Open(v.ValueCiphertext, v.KeyID, secret.EnvContext(v.ProjectID, v.Name))
		if err != nil {
			return nil, fmt.Errorf("environment variable %s %w: %w", v.Name, ErrUndecryptable, err)
		}
		env[v.Name] = string(plain)
	}
	return env, nil
}
