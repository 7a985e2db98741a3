// Package edge is the edge proxy: which instances serve a Host, and the
// proxying to them. It owns the route table (host → deployment → healthy
// instances with the node-proxies that reach them), which is built from the
// database, swapped atomically so a request never sees half a table, and
// snapshotted to disk so an edge can start while the database is away.
// Host names are keyed in internal/hostname's normal form.
//
// Requests take one of two data paths (fast.go says why there are two):
// net/http with httputil.ReverseProxy (proxy.go), or for HTTP/1.1 (plain
// or over TLS) the edge's own forwarding loop (fast*.go), which hands
// anything it does not handle to net/http. On the second, HTTP/2 is the
// edge's own server's (h2.go), and what net/http or that server parsed is
// forwarded by the direct exchange (direct.go) on the forwarding loop's
// upstream connections, or by ReverseProxy when it is unusual. All choose
// instances, retry, keep passive health and rewrite headers the same way,
// and the tests run on every path.
package edge
