package node

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
)

var (
	// ErrNotFound: no node with that id.
	ErrNotFound = errors.New("node not found")
	// ErrInvalid: the request cannot be carried out as asked.
	ErrInvalid = errors.New("invalid request")
	// ErrNoCapacity: the node has not enough free CPU or memory.
	ErrNoCapacity = errors.New("not enough free capacity on this node")
)

// Node is one worker machine as the cluster knows it.
type Node struct {
	ID              uuid.UUID `json:"id"`
	Hostname        string    `json:"hostname"`
	InternalAddress string    `json:"internal_address"` // where the edge and operators reach its agent
	// APIAddress is host:port of the node API, as the agent advertised it;
	// empty for an agent that did not.
	APIAddress string `json:"api_address,omitempty"`
	Region     string `json:"region"`
	Labels     []byte `json:"-"` // JSON object
	// Prefix is the node's /64 of the cluster prefix: its instances'
	// addresses come from it.
	Prefix          netip.Prefix `json:"ipv6_prefix"`
	Status          Status       `json:"status"`
	CPUMillis       int32        `json:"cpu_millis"`
	FreeCPUMillis   int32        `json:"free_cpu_millis"`
	MemoryMB        int32        `json:"memory_mb"`
	FreeMemoryMB    int32        `json:"free_memory_mb"`
	AgentVersion    string       `json:"agent_version"`
	LastHeartbeatAt time.Time    `json:"last_heartbeat_at"`
	// What the agent last observed: nil when it could not tell.
	AvailableMemoryMB *int32 `json:"available_memory_mb"`
	LoadMillis        *int32 `json:"load_millis"`
	InstancesRunning  *int32 `json:"instances_running"`
}

func fromRow(r db.Node) Node {
	return Node{
		ID: r.ID, Hostname: r.Hostname, InternalAddress: r.InternalAddress, APIAddress: lo.FromPtr(r.ApiAddress), Region: r.Region, Labels: r.Labels,
		Prefix: r.Ipv6Prefix, Status: Status(r.Status), CPUMillis: r.CpuMillis, FreeCPUMillis: r.FreeCpuMillis,
		MemoryMB: r.MemoryMb, FreeMemoryMB: r.FreeMemoryMb, AgentVersion: r.AgentVersion, LastHeartbeatAt: r.LastHeartbeatAt,
		AvailableMemoryMB: r.AvailableMemoryMb, LoadMillis: r.LoadMillis, InstancesRunning: r.InstancesRunning,
	}
}

func fromRows(rows []db.Node) []Node {
	return lo.Map(rows, func(r db.Node, _ int) Node { return fromRow(r) })
}

// Store reads and writes the nodes table.
type Store struct {
	DB db.Conn // a pool, or a transaction to take part in
}

func (s Store) q() *db.Queries { return db.New(s.DB) }

// notFound turns a missing row into ErrNotFound naming the node.
func notFound(err error, id uuid.UUID) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return err
}
