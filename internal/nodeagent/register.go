// Package nodeagent is the worker side of Zeitwork (`zeitwork nodeagent`):
// it registers its node, heartbeats, converges the instances the database
// assigns to it onto containerd, reports what it observes, and serves the
// node API and the node-proxy. The rows it reads and writes belong to the
// node and instance stores; what it owns is the machine.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
)

// idFile keeps the node's id across agent restarts and upgrades.
const idFile = "node-id"

// Register records the node under the id kept in stateDir (r.ID is
// ignored) and returns it, with its /64 in the cluster prefix. A node that
// registered before keeps its id and prefix; if its state directory was
// lost, the id the cluster knows is written back to it.
func Register(ctx context.Context, pool *pgxpool.Pool, cluster netip.Prefix, stateDir string, r node.Registration) (node.Node, error) {
	nodeID, err := loadOrCreateID(stateDir)
	if err != nil {
		return node.Node{}, err
	}
	r.ID = nodeID
	n, err := node.Store{DB: pool}.Register(ctx, cluster, r)
	if err != nil {
		return node.Node{}, err
	}
	if n.ID != nodeID {
		// The address was registered before under another id (the state
		// directory was lost): that row is this node.
		if err := writeID(stateDir, n.ID); err != nil {
			return node.Node{}, err
		}
	}
	return n, nil
}

func loadOrCreateID(stateDir string) (uuid.UUID, error) {
	u, err := StoredID(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		u = id.New()
		return u, writeID(stateDir, u)
	}
	return u, err
}

// StoredID is the node id an agent keeps in stateDir; an error wrapping
// os.ErrNotExist if it has none yet.
func StoredID(stateDir string) (uuid.UUID, error) {
	raw, err := os.ReadFile(filepath.Join(stateDir, idFile))
	if err != nil {
		return uuid.Nil, fmt.Errorf("read node id: %w", err)
	}
	u, err := uuid.Parse(strings.TrimSpace(string(raw)))
	if err != nil {
		return uuid.Nil, fmt.Errorf("node id file %s is corrupt: %w", filepath.Join(stateDir, idFile), err)
	}
	return u, nil
}

func writeID(stateDir string, u uuid.UUID) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("node state directory: %w", err)
	}
	tmp := filepath.Join(stateDir, idFile+".tmp")
	if err := os.WriteFile(tmp, []byte(u.String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("write node id: %w", err)
	}
	return os.Rename(tmp, filepath.Join(stateDir, idFile))
}
