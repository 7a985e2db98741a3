package instance

import (
	"errors"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/node"
)

var (
	// ErrNotFound: no such instance (on this node, for a node's store), or
	// no such deployment to create one of.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request cannot be carried out as asked.
	ErrInvalid = errors.New("invalid request")
	// ErrNoCapacity: the node has not enough free CPU or memory. It is
	// node.ErrNoCapacity, so callers of either package check one error.
	ErrNoCapacity = node.ErrNoCapacity
	// ErrCannotPlace: no node can take the instances asked for; the
	// wrapping error says why (the scheduler's refusal).
	ErrCannotPlace = errors.New("cannot place instances")
)

// Instance is one running copy of a deployment's image on one node. Its
// JSON is the one shape every API shows an instance in.
type Instance struct {
	ID           uuid.UUID  `json:"id"`
	DeploymentID uuid.UUID  `json:"deployment_id"`
	NodeID       uuid.UUID  `json:"node_id"`
	ImageID      uuid.UUID  `json:"-"`
	Desired      Desired    `json:"desired_state"`
	State        State      `json:"state"`
	StateReason  string     `json:"state_reason,omitempty"`
	Addr         netip.Addr `json:"address"` // in its node's /64
	Port         int32      `json:"port"`
	CPUMillis    int32      `json:"cpu_millis"`
	MemoryMB     int32      `json:"memory_mb"`
	RestartCount int32      `json:"restart_count"` // crashes in a row
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
	// FirstStartedAt is when it first started, its image pulled; a restart
	// moves StartedAt, not this.
	FirstStartedAt *time.Time `json:"-"`
	StoppedAt      *time.Time `json:"stopped_at"`
	// CapacityReleased is set once the node's reservation for it was given
	// back (it has stopped for good).
	CapacityReleased bool `json:"-"`
}

// AddrPort is where the instance listens.
func (in Instance) AddrPort() netip.AddrPort { return netip.AddrPortFrom(in.Addr, uint16(in.Port)) }

// Assignment is an instance as its node agent converges it, with what it
// needs to run it.
type Assignment struct {
	Instance
	Image           string // repository@digest, what to pull
	ProjectID       uuid.UUID
	HealthCheckPath string
}

func fromRow(r db.Instance) Instance {
	var reason string
	if r.StateReason != nil {
		reason = *r.StateReason
	}
	return Instance{
		ID: r.ID, DeploymentID: r.DeploymentID, NodeID: r.NodeID, ImageID: r.ImageID,
		Desired: Desired(r.DesiredState), State: State(r.State), StateReason: reason,
		Addr: r.Ipv6Address, Port: r.Port, CPUMillis: r.CpuMillis, MemoryMB: r.MemoryMb,
		RestartCount: r.RestartCount, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FirstStartedAt: r.FirstStartedAt, StoppedAt: r.StoppedAt,
		CapacityReleased: r.CapacityReleasedAt != nil,
	}
}

func fromRows(rows []db.Instance) []Instance {
	return lo.Map(rows, func(r db.Instance, _ int) Instance { return fromRow(r) })
}
