package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/ipam"
)

// Registration is what an agent tells the cluster about its machine.
type Registration struct {
	// ID is the id the agent keeps across restarts; a node registered
	// before under the same internal address keeps its old id instead.
	ID              uuid.UUID
	Hostname        string
	InternalAddress string // where the edge and operators reach this node (Tailscale in production)
	// APIAddress is host:port of the node API; empty: not advertised.
	APIAddress   string
	Region       string
	Labels       []byte // JSON object
	CPUMillis    int32
	MemoryMB     int32
	AgentVersion string
}

// Register records the node and returns it, with its /64 of cluster. A node
// that registered before (same internal address) keeps its id, its prefix
// and what is allocated on it, and becomes active again (unless it is
// draining: a drain outlives the agent's restart). Many nodes may
// register at once: prefixes are unique in the database, so a node that
// loses a race for one simply tries the next.
func (s Store) Register(ctx context.Context, cluster netip.Prefix, r Registration) (Node, error) {
	if err := ipam.ValidateCluster(cluster); err != nil {
		return Node{}, err
	}
	labels := r.Labels
	if labels == nil {
		labels = []byte("{}")
	}
	q := s.q()
	const maxTries = 64
	for range maxTries {
		taken, err := q.NodeListIPv6Prefixes(ctx)
		if err != nil {
			return Node{}, fmt.Errorf("register node: %w", err)
		}
		prefix, ok := freePrefix(cluster, taken)
		if !ok {
			return Node{}, fmt.Errorf("register node: every /64 of %s is taken", cluster)
		}
		row, err := q.NodeRegister(ctx, db.NodeRegisterParams{
			ID: r.ID, Hostname: r.Hostname, InternalAddress: r.InternalAddress, ApiAddress: lo.EmptyableToPtr(r.APIAddress), Region: r.Region, Labels: labels,
			CpuMillis: r.CPUMillis, MemoryMb: r.MemoryMB, Ipv6Prefix: prefix, AgentVersion: r.AgentVersion,
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			return fromRow(row), nil
		case errors.As(err, &pgErr) && pgErr.ConstraintName == "nodes_ipv6_prefix_unique":
			continue // another node took this /64 between our read and write
		case errors.As(err, &pgErr) && pgErr.ConstraintName == "nodes_pkey":
			return Node{}, fmt.Errorf("register node: node %s is registered under another internal address; its address changed from what the cluster knows — deregister it or restore %s", r.ID, r.InternalAddress)
		default:
			return Node{}, fmt.Errorf("register node: %w", err)
		}
	}
	return Node{}, fmt.Errorf("register node: lost the race for a /64 %d times", maxTries)
}

// freePrefix picks the first /64 not taken. Node prefixes count from 1:
// index 0 is left for the cluster's own use.
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

// Observation is what an agent measures of its node at each heartbeat; -1
// means it could not tell.
type Observation struct {
	AvailableMemoryMB, LoadMillis, InstancesRunning int32
}

// Heartbeat records that the node is alive and what it observes. A node
// declared dead that speaks again is active.
func (s Store) Heartbeat(ctx context.Context, id uuid.UUID, o Observation) (Node, error) {
	row, err := s.q().NodeHeartbeat(ctx, db.NodeHeartbeatParams{
		ID: id, AvailableMemoryMb: o.AvailableMemoryMB, LoadMillis: o.LoadMillis, InstancesRunning: o.InstancesRunning,
	})
	if err != nil {
		return Node{}, fmt.Errorf("heartbeat: %w", notFound(err, id))
	}
	return fromRow(row), nil
}

// Get returns one node.
func (s Store) Get(ctx context.Context, id uuid.UUID) (Node, error) {
	row, err := s.q().NodeGetByID(ctx, id)
	if err != nil {
		return Node{}, notFound(err, id)
	}
	return fromRow(row), nil
}

// List returns every node, by hostname.
func (s Store) List(ctx context.Context) ([]Node, error) {
	rows, err := s.q().NodeList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return fromRows(rows), nil
}

// ListSchedulable returns the active nodes heard from since after, most
// free capacity first.
func (s Store) ListSchedulable(ctx context.Context, after time.Time) ([]Node, error) {
	rows, err := s.q().NodeListSchedulable(ctx, after)
	if err != nil {
		return nil, fmt.Errorf("list schedulable nodes: %w", err)
	}
	return fromRows(rows), nil
}

// ListStale returns the live nodes not heard from since before.
func (s Store) ListStale(ctx context.Context, before time.Time) ([]Node, error) {
	rows, err := s.q().NodeListStale(ctx, before)
	if err != nil {
		return nil, fmt.Errorf("list stale nodes: %w", err)
	}
	return fromRows(rows), nil
}

// MarkDeadIfStale declares a node dead if it is still silent since before;
// false means it came back (or was dead already).
func (s Store) MarkDeadIfStale(ctx context.Context, id uuid.UUID, before time.Time) (bool, error) {
	_, err := s.q().NodeMarkDeadIfStale(ctx, db.NodeMarkDeadIfStaleParams{ID: id, HeartbeatBefore: before})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mark node %s dead: %w", id, err)
	}
	return true, nil
}

// SetStatus drains (StatusDraining) or undrains (StatusActive) a node. A
// dead node cannot be set: it becomes active again when its agent
// registers or heartbeats.
func (s Store) SetStatus(ctx context.Context, id uuid.UUID, status Status) (Node, error) {
	if status != StatusDraining && status != StatusActive {
		return Node{}, fmt.Errorf("%w: status %q", ErrInvalid, status)
	}
	var out Node
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		n, err := q.NodeGetByID(ctx, id)
		if err != nil {
			return notFound(err, id)
		}
		if Status(n.Status) == StatusDead {
			return fmt.Errorf("%w: node %s is dead; it becomes active again when its agent registers", ErrInvalid, id)
		}
		row, err := q.NodeSetStatus(ctx, db.NodeSetStatusParams{ID: id, Status: string(status)})
		if err != nil {
			return fmt.Errorf("set node %s %s: %w", id, status, err)
		}
		out = fromRow(row)
		return nil
	})
	return out, err
}

// Allocate reserves capacity on a node for one instance, or says
// ErrNoCapacity.
func (s Store) Allocate(ctx context.Context, id uuid.UUID, cpuMillis, memoryMB int32) error {
	_, err := s.q().NodeAllocate(ctx, db.NodeAllocateParams{ID: id, CpuMillis: cpuMillis, MemoryMb: memoryMB})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: node %s", ErrNoCapacity, id)
	}
	if err != nil {
		return fmt.Errorf("allocate on node %s: %w", id, err)
	}
	return nil
}

// Release gives back what Allocate reserved, never above the node's total.
func (s Store) Release(ctx context.Context, id uuid.UUID, cpuMillis, memoryMB int32) error {
	if _, err := s.q().NodeRelease(ctx, db.NodeReleaseParams{ID: id, CpuMillis: cpuMillis, MemoryMb: memoryMB}); err != nil {
		return fmt.Errorf("release on node %s: %w", id, notFound(err, id))
	}
	return nil
}
