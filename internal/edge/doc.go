// Package edge is the edge proxy: which instances serve a Host, and the
// proxying to them. It owns the route table (host → deployment → healthy
// instances with the node-proxies that reach them), which is built from the
// database, swapped atomically so a request never sees half a table, and
// snapshotted to disk so an edge can start while the database is away.
// Host names are keyed in internal/hostname's normal form.
package edge
