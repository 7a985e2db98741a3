// Package bootstrap brings a set of machines to the cluster that
// cluster.yaml declares: it checks credentials and reachability, migrates
// the database, installs the zeitwork binary with its systemd units on
// every node over SSH, waits for the roles to register, and waits for the
// edges to store the platform certificates (the edge's own ACME code
// obtains them; bootstrap only checks the database for them).
//
// # Steps
//
// The work is a list of steps, each with a Check (is it done already?) and
// an Apply. Apply is only called when Check says no, and every Apply is
// idempotent, so a second run finds everything done and changes nothing,
// and a run killed half-way picks up where it stopped: there is no progress
// file to go stale, the machines and the database are the record.
// `--dry-run` runs the checks only.
//
// # Recovery
//
// The database is the cluster's memory. When it already knows nodes, the
// plan matches them to the file's machines by internal address, and a
// worker that is reinstalled gets its recorded node id written into the
// agent's state directory before the agent starts: it registers as the
// node it was, with its /64, and its instances are rescheduled as usual.
//
// # Upgrades
//
// When a node's units run but not with this binary and configuration,
// Rollout restarts them without taking traffic down: a worker is drained,
// waited on until the operators have moved its instances and their
// replacements are healthy (restarting the agent takes its node-proxy
// down), restarted, waited on until its new agent heartbeats, and
// undrained; an operator is waited on until it is alive again. The steps
// go node by node, so one worker at a time is drained. A marker on the
// worker (DrainMarker) says the drain is bootstrap's, so a run killed
// mid-rollout is finished by the next one, and a drain set by a person is
// left in place.
package bootstrap
