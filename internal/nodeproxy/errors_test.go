package nodeproxy_test

import (
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi/httpapitest"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
)

// TestErrorsAreOneStory: the node-proxy's own refusals are the JSON every
// API answers with, and an instance's failure shows no cause. It has no
// method, body or database of its own: any method and body go to the app,
// and what it knows of instances is in memory, so those cases belong to
// the APIs in front of a database.
func TestErrorsAreOneStory(t *testing.T) {
	f := newFixture(t)
	sick := f.instance(t, http.NotFoundHandler())
	tg := f.instances[sick]
	tg.Healthy = false
	f.instances[sick] = tg
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := id.New()
	f.instances[dead] = nodeproxy.Target{Addr: netip.MustParseAddrPort(l.Addr().String()), Healthy: true}
	l.Close()

	as := func(instance string) http.Header {
		return http.Header{nodeproxy.HeaderToken: {token}, nodeproxy.HeaderInstance: {instance}}
	}
	httpapitest.Run(t, f.proxy.URL, nil, []httpapitest.Case{
		{Name: "no token", Method: "GET", Path: "/", Header: http.Header{nodeproxy.HeaderInstance: {sick.String()}}, Status: 401, Code: "unauthorized"},
		{Name: "malformed instance id", Method: "GET", Path: "/", Header: as("not-a-uuid"), Status: 400, Code: "bad_request"},
		{Name: "instance gone", Method: "POST", Path: "/", Body: "{}", Header: as(id.New().String()), Status: 502, Code: "instance_gone"},
		{Name: "instance unhealthy", Method: "GET", Path: "/", Header: as(sick.String()), Status: 503, Code: "instance_unhealthy"},
		{Name: "instance unreachable", Method: "GET", Path: "/", Header: as(dead.String()), Status: 502, Code: "instance_unreachable",
			Hidden: []string{"connection refused", l.Addr().String()}},
	})
}
