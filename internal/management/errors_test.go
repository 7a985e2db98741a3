package management_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/httpapi/httpapitest"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// noCluster refuses every placement; the error table never reaches it.
type noCluster struct{}

func (noCluster) AddInstance(context.Context, uuid.UUID, *uuid.UUID) (instance.Instance, error) {
	return instance.Instance{}, instance.ErrCannotPlace
}

func (noCluster) SetNodeStatus(context.Context, uuid.UUID, node.Status) (node.Node, error) {
	return node.Node{}, node.ErrNotFound
}

// closedPool is a database that is gone: every query fails.
func closedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://zeitwork@127.0.0.1:1/gone")
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	return pool
}

func server(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	api := &management.API{Pool: pool, Images: image.Store{Pool: pool}, Token: token, Log: zlog.Discard(), Cluster: noCluster{}}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestErrorsAreOneStory: every refusal of the management API is JSON with
// a code and the request id; only a missing thing is a 404; a database
// outage is an opaque 500, never a 404 and never its cause.
func TestErrorsAreOneStory(t *testing.T) {
	auth := http.Header{"Authorization": {"Bearer " + token}}
	some := id.New().String()
	live := server(t, testdb.New(t))
	httpapitest.Run(t, live, auth, []httpapitest.Case{
		{Name: "wrong method", Method: "PATCH", Path: "/v1/images", Status: 405, Code: "method_not_allowed"},
		{Name: "wrong method on an instance", Method: "POST", Path: "/v1/instances/" + some, Status: 405, Code: "method_not_allowed"},
		{Name: "malformed JSON", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": `, Status: 400, Code: "bad_request"},
		{Name: "unknown field", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": "` + some + `", "replicas": 9}`, Status: 400, Code: "bad_request"},
		{Name: "oversized body", Method: "POST", Path: "/v1/images", Body: httpapitest.Oversized(), Status: 413, Code: "too_large"},
		{Name: "missing instance", Method: "GET", Path: "/v1/instances/" + some, Status: 404, Code: "not_found"},
		{Name: "missing instance to stop", Method: "PUT", Path: "/v1/instances/" + some + "/state", Body: `{"state": "stopped"}`, Status: 404, Code: "not_found"},
		{Name: "no placement", Method: "POST", Path: "/v1/instances", Body: `{"deployment_id": "` + some + `"}`, Status: 409, Code: "conflict"},
		{Name: "unknown route", Method: "GET", Path: "/v1/nothing", Status: 404, Code: "not_found"},
		{Name: "no token", Method: "GET", Path: "/v1/nodes", Header: http.Header{"Authorization": {"Bearer wrong"}}, Status: 401, Code: "unauthorized"},
	})

	down := server(t, closedPool(t))
	hidden := []string{"closed pool", "127.0.0.1", "gone"}
	httpapitest.Run(t, down, auth, []httpapitest.Case{
		{Name: "outage: list images", Method: "GET", Path: "/v1/images", Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: get image", Method: "GET", Path: "/v1/images/" + some, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: get instance", Method: "GET", Path: "/v1/instances/" + some, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: list instances", Method: "GET", Path: "/v1/instances", Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: stop instance", Method: "PUT", Path: "/v1/instances/" + some + "/state", Body: `{"state": "stopped"}`, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: delete instance", Method: "DELETE", Path: "/v1/instances/" + some, Status: 500, Code: "internal", Hidden: hidden},
		{Name: "outage: list nodes", Method: "GET", Path: "/v1/nodes", Status: 500, Code: "internal", Hidden: hidden},
	})
}
