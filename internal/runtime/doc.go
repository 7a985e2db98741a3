// Package runtime runs a node's instances on containerd: it pulls images
// (with registry credentials), creates each instance as a container with the
// configured runtime handler (runc, or Kata for a microVM per instance) and
// its CPU, memory, environment and network namespace, starts, stops and
// reports them, streams their exit and OOM events, and keeps their
// stdout/stderr in size-bounded files (through a log writer the shim runs,
// logwriter.go). Every instance is hardened the same way (harden.go:
// seccomp, capabilities, pids limit, user namespace), and images no
// instance uses are pruned after a grace.
//
// It works in one containerd namespace and keeps no state of its own: labels
// on the containers carry what it needs, so an agent that restarts finds its
// instances still running (their shims own them and their log files) and
// adopts them with List. One of those labels names the owner (the node), and
// a container without it is invisible: a namespace may be shared, by another
// platform on the same machine or by hand, and no agent may stop what it did
// not start. Deciding what should run is the convergence loop's business;
// this package only does what it is told, and reports.
//
// KATA.md, next to this file, says how a node is set up for Kata with
// Cloud Hypervisor or Firecracker.
package runtime
