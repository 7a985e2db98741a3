// Package node owns worker nodes: registration, heartbeats, capacity and
// status. It holds the typed status, the errors and the store of the nodes
// table (pgx.ErrNoRows ends here).
package node

// Status is whether a node takes new instances.
type Status string

const (
	// StatusActive nodes heartbeat and take new instances.
	StatusActive Status = "active"
	// StatusDraining nodes keep what they run until it has moved, and take
	// nothing new.
	StatusDraining Status = "draining"
	// StatusDead nodes went silent past the heartbeat deadline; their
	// instances are failed and replaced elsewhere.
	StatusDead Status = "dead"
)
