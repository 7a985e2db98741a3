// Package logs reads a deployment's logs as one stream: the build log from
// build_logs (see internal/buildlog) and the runtime output of every
// instance, fetched from the node APIs of the nodes the instances run on.
//
// # Positions
//
// Sources are read in their own order and merged as lines arrive, so no
// single line id can say how far a reader got. A Cursor does: the last
// build line read per build (UUIDv7 ids, which one writer hands out in
// the order it stores them) and the next byte to read per instance. A
// reader that hands back the cursor of the last event it saw resumes each
// source exactly after what it saw: no line twice, none lost, with two
// limits it cannot close: a runtime log the node rotated between the two
// reads (offsets then count from another start; the node says so and the
// stream resumes from the oldest line kept, with a system line saying
// so), and output the node never kept (see internal/runtime).
//
// # Connections
//
// A live stream follows build logs through one listening Postgres
// connection per process (buildlog.Hub), and each instance's log over an
// HTTP request to its node API held open while the stream lasts.
//
// # Time
//
// Build lines carry the time they were stored. Runtime lines carry none:
// the node keeps the raw bytes the instance wrote, nothing more, so time
// filters apply to build lines only.
package logs
