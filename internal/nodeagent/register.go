// Package nodeagent is the worker side of Zeitwork (`zeitwork nodeagent`):
// it registers its node, heartbeats, converges the instances the database
// assigns to it onto containerd, reports what it observes, and serves the
// node API and the node-proxy.
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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
)

// Node is what an agent tells the cluster about its machine.
type Node struct {
	Hostname        string
	InternalAddress string // where the edge and operators reach this node (Tailscale in production)
	Region          string
	Labels          []byte // JSON object
	CPUMillis       int32
	MemoryMB        int32
	AgentVersion    string
}

// idFile keeps the node's id across agent restarts and upgrades.
const idFile = "node-id"

// Register records the node and returns its row, with the node's /64 in the
// cluster prefix. A node that registered before keeps its id and prefix. Many
// nodes may register at once: prefixes are unique in the database, so a
// node that loses a race for one simply tries the next.
func Register(ctx context.Context, pool *pgxpool.Pool, cluster netip.Prefix, stateDir string, n Node) (db.Node, error) {
	if err := ipam.ValidateCluster(cluster); err != nil {
		return db.Node{}, err
	}
	nodeID, err := loadOrCreateID(stateDir)
	if err != nil {
		return db.Node{}, err
	}
	q := db.New(pool)
	labels := n.Labels
	if labels == nil {
		labels = []byte("{}")
	}
	// Node prefixes count from 1: index 0 is left for the cluster's own use.
	const maxTries = 64
	for try := 0; try < maxTries; try++ {
		taken, err := q.NodeListIPv6Prefixes(ctx)
		if err != nil {
			return db.Node{}, fmt.Errorf("register node: %w", err)
		}
		prefix, ok := freePrefix(cluster, taken)
		if !ok {
			return db.Node{}, fmt.Errorf("register node: every /64 of %s is taken", cluster)
		}
		row, err := q.NodeRegister(ctx, db.NodeRegisterParams{
			ID: nodeID, Hostname: n.Hostname, InternalAddress: n.InternalAddress, Region: n.Region, Labels: labels,
			CpuMillis: n.CPUMillis, MemoryMb: n.MemoryMB, Ipv6Prefix: prefix, AgentVersion: n.AgentVersion,
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			if row.ID != nodeID {
				// The address was registered before under another id (the
				// state directory was lost): that row is this node.
				if err := writeID(stateDir, row.ID); err != nil {
					return db.Node{}, err
				}
			}
			return row, nil
		case errors.As(err, &pgErr) && pgErr.ConstraintName == "nodes_ipv6_prefix_unique":
			continue // another node took this /64 between our read and write
		case errors.As(err, &pgErr) && pgErr.ConstraintName == "nodes_pkey":
			return db.Node{}, fmt.Errorf("register node: node %s is registered under another internal address; its address changed from what the cluster knows — deregister it or restore %s", nodeID, n.InternalAddress)
		default:
			return db.Node{}, fmt.Errorf("register node: %w", err)
		}
	}
	return db.Node{}, fmt.Errorf("register node: lost the race for a /64 %d times", maxTries)
}

func freePrefix(cluster netip.Prefix, taken []netip.Prefix) (netip.Prefix, bool) {
	used := make(map[netip.Prefix]bool, len(taken))
	for _, p := range taken {
		used[p] = true
	}
	for i := 1; i <= 0xffff; i++ {
		p := ipam.NodePrefix(cluster, uint16(i))
		if !used[p] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func loadOrCreateID(stateDir string) (uuid.UUID, error) {
	raw, err := os.ReadFile(filepath.Join(stateDir, idFile))
	switch {
	case err == nil:
		u, err := uuid.Parse(strings.TrimSpace(string(raw)))
		if err != nil {
			return uuid.Nil, fmt.Errorf("node id file %s is corrupt: %w", filepath.Join(stateDir, idFile), err)
		}
		return u, nil
	case errors.Is(err, os.ErrNotExist):
		u := id.New()
		return u, writeID(stateDir, u)
	default:
		return uuid.Nil, fmt.Errorf("read node id: %w", err)
	}
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
