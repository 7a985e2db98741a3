package scheduler

import (
	"fmt"
	"strings"
)

// CannotPlace says why a deployment's instances do not fit. It summarises
// the cluster in counts rather than listing nodes, because the message goes
// to a user and a cluster may have thousands of nodes; each node is counted
// once, under the first reason in field order.
type CannotPlace struct {
	Instances int // instances this call had to place
	Replicas  int // effective replica count (after raising to MinReplicas)
	Existing  int // live instances already placed
	CPUMillis int32
	MemoryMB  int32
	Region    string // "" = any

	Nodes    int // nodes in the view
	Eligible int // nodes with room for at least one instance
	Room     int // instances the eligible nodes can hold together

	Dead        int // status dead
	Draining    int // status draining
	Inactive    int // any other status that is not active
	Stale       int // active, but heartbeat older than the deadline
	WrongRegion int
	LowCPU      int // otherwise fit, too little free CPU
	LowMemory   int // otherwise fit, enough CPU, too little free memory

	// The most free CPU and the most free memory (each maximum taken on its
	// own) among LowCPU and LowMemory nodes, so the user can tell whether
	// smaller instances would fit.
	MostFreeCPUMillis int32
	MostFreeMemoryMB  int32
}

func (c *CannotPlace) noteFree(n *Node) {
	c.MostFreeCPUMillis = max(c.MostFreeCPUMillis, n.FreeCPUMillis)
	c.MostFreeMemoryMB = max(c.MostFreeMemoryMB, n.FreeMemoryMB)
}

// Error reads like "cannot place 3 instances of 500m CPU / 512 MiB in region
// eu-central-1: 1 of 6 nodes has room, for 1 instance; the others: 1 dead,
// 1 draining, 2 heartbeat stale, 1 too little CPU (most free: 200m CPU,
// 4096 MiB)".
func (c *CannotPlace) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cannot place %s of %dm CPU / %d MiB", plural(c.Instances, "instance"), c.CPUMillis, c.MemoryMB)
	if c.Existing > 0 {
		fmt.Fprintf(&b, " (%d replicas, %d running)", c.Replicas, c.Existing)
	}
	if c.Region != "" {
		fmt.Fprintf(&b, " in region %s", c.Region)
	}
	if c.Nodes == 0 {
		b.WriteString(": there are no nodes")
		return b.String()
	}
	has := "have"
	if c.Eligible == 1 {
		has = "has"
	}
	fmt.Fprintf(&b, ": %d of %s %s room, for %s", c.Eligible, plural(c.Nodes, "node"), has, plural(c.Room, "instance"))

	var why []string
	add := func(n int, what string) {
		if n > 0 {
			why = append(why, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(c.Dead, "dead")
	add(c.Draining, "draining")
	add(c.Inactive, "not active")
	add(c.Stale, "heartbeat stale")
	add(c.WrongRegion, "in another region")
	add(c.LowCPU, "too little CPU")
	add(c.LowMemory, "too little memory")
	if len(why) > 0 {
		b.WriteString("; the others: ")
		b.WriteString(strings.Join(why, ", "))
	}
	if c.LowCPU+c.LowMemory > 0 {
		fmt.Fprintf(&b, " (most free: %dm CPU, %d MiB)", c.MostFreeCPUMillis, c.MostFreeMemoryMB)
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
