// Command fasthttpproxy is the third data path of the edge benchmark: a
// reverse proxy built on valyala/fasthttp (its Server for clients, an
// LBClient over one HostClient per backend), doing per request what the
// edge's fast path does on its way through — a route lookup by Host,
// least-loaded balancing over the route's instances, hop-by-hop headers
// and untrusted client-address headers dropped, X-Forwarded-For/-Host/
// -Proto and X-Request-Id set — and nothing else.
//
// It is the upper bound of what fasthttp would give the edge, not a
// candidate as it stands: it buffers whole bodies both ways (no streaming,
// no server-sent events), cannot pass a websocket upgrade or any request it
// has started parsing to net/http, retries idempotent requests on its
// client's rules rather than only when no app saw them, and has no passive
// health or HTTP/2, and with header-name normalising off (as measured, the
// cheaper setting) it matches the headers it removes as spelled above, not
// in any case. If fasthttp does not beat internal/edge's own loop even
// without those, building them around it cannot pay.
//
//	fasthttpproxy -listen 127.0.0.1:8080 -host app.bench.test -backends 127.0.0.1:1,127.0.0.1:2
//
// With -pprof it serves net/http/pprof, as the benchmark's edge does.
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	_ "net/http/pprof" // -pprof
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// route is what a Host resolves to.
type route struct {
	lb *fasthttp.LBClient
}

// hopByHop are the headers that belong to one connection (RFC 9110 7.6.1),
// and the client-address headers only the proxy may set.
var (
	hopByHop  = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	untrusted = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "True-Client-Ip", "X-Forwarded-Ssl", "Cf-Connecting-Ip", "Forwarded"}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	host := flag.String("host", "", "the Host routed to the backends")
	backends := flag.String("backends", "", "comma-separated backend addresses")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (empty: not at all)")
	flag.Parse()
	if *host == "" || *backends == "" {
		fmt.Fprintln(os.Stderr, "fasthttpproxy: -host and -backends are required")
		os.Exit(2)
	}

	srv := newServer(*host, strings.Split(*backends, ","))

	if *pprofAddr != "" {
		l, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fasthttpproxy:", err)
			os.Exit(1)
		}
		ps := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		go ps.Serve(l) //nolint:errcheck
	}
	if err := srv.ListenAndServe(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "fasthttpproxy:", err)
		os.Exit(1)
	}
}

// newServer is the proxy: host routed to the backends.
func newServer(host string, backends []string) *fasthttp.Server {
	lb := &fasthttp.LBClient{Timeout: 60 * time.Second}
	for _, addr := range backends {
		lb.Clients = append(lb.Clients, &fasthttp.HostClient{
			Addr:                          addr,
			MaxConns:                      512,
			MaxIdleConnDuration:           90 * time.Second,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			// Once, like the edge for a request an app may have seen.
			MaxIdemponentCallAttempts: 1,
		})
	}
	routes := map[string]route{host: {lb: lb}}

	h := func(ctx *fasthttp.RequestCtx) {
		// string(bytes) as a map key does not allocate.
		rt, ok := routes[string(ctx.Host())]
		if !ok {
			ctx.Error("no such host\n", fasthttp.StatusNotFound)
			return
		}
		req := &ctx.Request
		var id [32]byte
		if rid := req.Header.Peek("X-Request-Id"); len(rid) == 0 || len(rid) > 128 {
			var raw [16]byte
			r := rand.Uint64()
			for i := range 8 {
				raw[i] = byte(r >> (8 * i))
			}
			r = rand.Uint64()
			for i := range 8 {
				raw[8+i] = byte(r >> (8 * i))
			}
			hex.Encode(id[:], raw[:])
			req.Header.SetBytesV("X-Request-Id", id[:])
		}
		for _, k := range hopByHop {
			req.Header.Del(k)
		}
		for _, k := range untrusted {
			req.Header.Del(k)
		}
		var ipBuf [64]byte
		req.Header.SetBytesV("X-Forwarded-For", remoteIP(ctx, ipBuf[:0]))
		req.Header.SetBytesV("X-Forwarded-Host", ctx.Host())
		req.Header.Set("X-Forwarded-Proto", "http")
		resp := &ctx.Response
		if err := rt.lb.Do(req, resp); err != nil {
			ctx.ResetBody()
			ctx.Error("upstream: "+err.Error()+"\n", fasthttp.StatusBadGateway)
			return
		}
		for _, k := range hopByHop {
			resp.Header.Del(k)
		}
		resp.Header.SetBytesV("X-Request-Id", req.Header.Peek("X-Request-Id"))
	}

	return &fasthttp.Server{
		Handler:                       h,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		ReadTimeout:                   10 * time.Second,
		IdleTimeout:                   120 * time.Second,
		MaxRequestBodySize:            64 << 10,
	}
}

// remoteIP appends the client's address, without its port, to buf.
func remoteIP(ctx *fasthttp.RequestCtx, buf []byte) []byte {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap().AppendTo(buf)
}
