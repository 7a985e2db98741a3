// Package instance owns instances: one running copy of a deployment's image
// on one node. It holds their typed states, their errors, the one JSON
// shape every API shows an instance in, and their store: the only code that
// writes the instances table (the edge reads its routes with a join of its
// own), with sqlc behind it and pgx.ErrNoRows turned into ErrNotFound here
// and nowhere else. Creating an instance reserves
// its capacity on its node and picks its address in the node's /64;
// deleting it gives both back. The control plane (operator, management API)
// and the worker (node agent, through a Store scoped to its node) both use
// it, so neither imports the other.
package instance

// State is what a node agent observed of an instance.
type State string

// An instance moves pending → pulling → starting → healthy, and may turn
// unhealthy and back; stopping → stopped when asked to stop; failed when it
// cannot run (it is then replaced, never restarted).
const (
	StatePending   State = "pending"
	StatePulling   State = "pulling"
	StateStarting  State = "starting"
	StateHealthy   State = "healthy"
	StateUnhealthy State = "unhealthy"
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"
	StateFailed    State = "failed"
)

// Over says whether the instance has ended: it runs no process and holds
// no address until it is started again (stopped) or replaced (failed).
func (s State) Over() bool { return s == StateStopped || s == StateFailed }

// Desired is what the control plane asks of an instance.
type Desired string

const (
	DesiredRunning Desired = "running"
	DesiredStopped Desired = "stopped"
)
