//go:build edgepprof

package edge

import (
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"time"
)

// Only in binaries built with -tags edgepprof (bench/edge/run.sh builds
// one): EDGE_PPROF_ADDR serves net/http/pprof, so the benchmark can take a
// CPU profile of each data path under load. Production builds never
// contain it: a profile endpoint is not something an edge should expose.
func init() {
	addr := os.Getenv("EDGE_PPROF_ADDR")
	if addr == "" {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic("EDGE_PPROF_ADDR: " + err.Error())
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go srv.Serve(l) //nolint:errcheck
}
