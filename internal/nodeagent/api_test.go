package nodeagent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/httpapi/httpapitest"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// observer is a container runtime that answers with nothing, or with err.
type observer struct{ err error }

func (o observer) Status(_ context.Context, id uuid.UUID) (runtime.Status, error) {
	return runtime.Status{InstanceID: id, State: runtime.StateMissing}, o.err
}

func (o observer) List(context.Context) ([]runtime.Status, error) { return nil, o.err }

func (o observer) Logs(context.Context, uuid.UUID, bool) (io.ReadCloser, error) {
	return nil, o.err
}

func nodeAPI(t *testing.T, pool *pgxpool.Pool, self node.Node, obs nodeagent.Observer) string {
	t.Helper()
	a := &nodeagent.Agent{Pool: pool, Node: self, Observer: obs, Token: clusterToken, Log: zlog.Discard()}
	srv := httptest.NewServer(a.APIHandler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestAPIErrorsAreOneStory: the node API refuses in JSON with a code and
// the request id; only an instance that is not on this node is a 404; a
// database or containerd outage is a 5xx that does not show its cause.
func TestAPIErrorsAreOneStory(t *testing.T) {
	auth := http.Header{"Authorization": {"Bearer " + clusterToken}}
	pool := testdb.New(t)
	self, err := nodeagent.Register(context.Background(), pool, ipam.DefaultCluster, t.TempDir(), node.Registration{
		Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	some := id.New().String()
	httpapitest.Run(t, nodeAPI(t, pool, self, observer{}), auth, []httpapitest.Case{
		{Name: "wrong method", Method: "PATCH", Path: "/v1/instances/" + some, Status: 405, Code: "method_not_allowed"},
		{Name: "malformed JSON", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id"`, Status: 400, Code: "bad_request"},
		{Name: "unknown field", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": "` + some + `", "image": "x"}`, Status: 400, Code: "bad_request"},
		{Name: "oversized body", Method: "POST", Path: "/v1/instances", Body: httpapitest.Oversized(), Status: 413, Code: "too_large"},
		{Name: "missing instance", Method: "GET", Path: "/v1/instances/" + some, Status: 404, Code: "not_found"},
		{Name: "missing deployment", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": "` + some + `", "port": 8080, "cpu_millis": 100, "memory_mb": 64}`, Status: 404, Code: "not_found"},
		{Name: "bad desired state", Method: "PUT", Path: "/v1/instances/" + some + "/state", Body: `{"state": "healthy"}`, Status: 422, Code: "invalid"},
	})

	const cause = "dial unix /run/containerd/containerd.sock: connection refused"
	down := nodeAPI(t, pool, self, observer{err: errors.New(cause)})
	httpapitest.Run(t, down, auth, []httpapitest.Case{
		{Name: "containerd outage: resources", Method: "GET", Path: "/v1/node/resources", Status: 503, Code: "unavailable", Hidden: []string{cause, "containerd.sock"}},
	})
	req, _ := http.NewRequest("GET", down+"/v1/health", nil)
	req.Header = auth
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || strings.Contains(string(body), "connection refused") {
		t.Fatalf("health with containerd down: %d %s", resp.StatusCode, body)
	}

	closed, err := pgxpool.New(context.Background(), "postgres://zeitwork@127.0.0.1:1/gone")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	hidden := []string{"closed pool", "127.0.0.1"}
	httpapitest.Run(t, nodeAPI(t, closed, self, observer{}), auth, []httpapitest.Case{
		{Name: "outage: get instance", Method: "GET", Path: "/v1/instances/" + some, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: instance logs", Method: "GET", Path: "/v1/instances/" + some + "/logs", Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: stop instance", Method: "PUT", Path: "/v1/instances/" + some + "/state", Body: `{"state": "stopped"}`, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: delete instance", Method: "DELETE", Path: "/v1/instances/" + some, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: create instance", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": "` + some + `", "port": 8080, "cpu_millis": 100, "memory_mb": 64}`, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: node info", Method: "GET", Path: "/v1/node/info", Status: 500, Code: "internal", Hidden: hidden},
	})
}

// TestNodeAPIAndNodeProxyTakeTheirOwnTokens: the edges hold the node-proxy
// token, so it must not open the node API (create or stop instances, read
// their logs); nor does the node API's token pass the node-proxy.
// It runs as the node agent's own database user: registering and the node
// API's reads need no more than its role's grants.
func TestNodeAPIAndNodeProxyTakeTheirOwnTokens(t *testing.T) {
	pool := testdb.Pool(t, testdb.As(t, testdb.NewURL(t), dbrole.NodeAgent))
	self, err := nodeagent.Register(context.Background(), pool, ipam.DefaultCluster, t.TempDir(), node.Registration{
		Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &nodeagent.Agent{Pool: pool, Node: self, Observer: observer{}, Token: clusterToken, ProxyToken: proxyToken, Log: zlog.Discard()}
	api, proxy := httptest.NewServer(a.APIHandler()), httptest.NewServer(a.ProxyHandler())
	t.Cleanup(api.Close)
	t.Cleanup(proxy.Close)
	status := func(req *http.Request) int {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	nodeInfo := func(token string) int {
		req, _ := http.NewRequest("GET", api.URL+"/v1/node/info", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		return status(req)
	}
	// A malformed instance id is answered only past the token check.
	viaProxy := func(token string) int {
		req, _ := http.NewRequest("GET", proxy.URL+"/", nil)
		req.Header.Set(nodeproxy.HeaderToken, token)
		req.Header.Set(nodeproxy.HeaderInstance, "not-an-id")
		return status(req)
	}
	if got := nodeInfo(clusterToken); got != 200 {
		t.Errorf("node API with its token: %d", got)
	}
	if got := nodeInfo(proxyToken); got != 401 {
		t.Errorf("node API with the node-proxy token: %d, want 401", got)
	}
	if got := viaProxy(proxyToken); got != 400 {
		t.Errorf("node-proxy with its token: %d, want 400 for the malformed instance id", got)
	}
	if got := viaProxy(clusterToken); got != 401 {
		t.Errorf("node-proxy with the node API token: %d, want 401", got)
	}
}
