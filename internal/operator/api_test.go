package operator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func managementAPI(t *testing.T, c *cluster) (func(method, path, body string) (int, string), string) {
	t.Helper()
	api := &management.API{Pool: c.pool, Token: "tok", Log: zlog.Discard(), Cluster: c.l}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}, srv.URL
}

func TestManagementInstancesAndNodes(t *testing.T) {
	c := newCluster(t, 3)
	call, base := managementAPI(t, c)
	dep := c.activeDeployment(t)

	code, body := call("POST", "/v1/instances", `{"deployment_id": "`+dep.String()+`"}`)
	var in instance.Instance
	json.Unmarshal([]byte(body), &in)
	if code != 201 || in.DeploymentID != dep || in.Desired != instance.DesiredRunning {
		t.Fatalf("add instance: %d %s", code, body)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/instances", `{"deployment_id": "` + id.New().String() + `"}`, 404, "deployment"},
		{"POST", "/v1/instances", `{}`, 400, "deployment_id is required"},
		{"POST", "/v1/instances", `{"deployment_id": "` + dep.String() + `", "node_id": "` + id.New().String() + `"}`, 422, "not active"},
		{"PUT", "/v1/instances/" + in.ID.String() + "/state", `{"state": "healthy"}`, 422, "running or stopped"},
		{"GET", "/v1/instances/" + id.New().String(), ``, 404, "not found"},
		{"GET", "/v1/instances?node_id=zzz", ``, 400, "node_id is not an id"},
		{"POST", "/v1/nodes/" + id.New().String() + "/drain", ``, 404, "node"},
	} {
		code, body := call(tc.method, tc.path, tc.body)
		var eb httpapi.ErrorBody
		json.Unmarshal([]byte(body), &eb)
		if code != tc.status || !strings.Contains(eb.Error, tc.want) {
			t.Errorf("%s %s %s: %d %s, want %d containing %q", tc.method, tc.path, tc.body, code, body, tc.status, tc.want)
		}
	}
	// Stopped, an instance may be asked to run again; a stopped→healthy
	// request is refused above.
	if code, body := call("PUT", "/v1/instances/"+in.ID.String()+"/state", `{"state": "stopped"}`); code != 200 {
		t.Fatalf("stop: %d %s", code, body)
	}
	code, body = call("GET", "/v1/instances?deployment_id="+dep.String(), ``)
	var list struct {
		Instances []instance.Instance `json:"instances"`
	}
	json.Unmarshal([]byte(body), &list)
	if code != 200 || len(list.Instances) != 4 {
		t.Fatalf("list: %d, %d instances", code, len(list.Instances))
	}

	// More than the cluster holds: a clear 409, nothing written.
	c.pool.Exec(context.Background(), `UPDATE projects SET cpu_millis = 100000 WHERE id = $1`, c.project)
	code, body = call("POST", "/v1/instances", `{"deployment_id": "`+dep.String()+`"}`)
	if code != 409 || !strings.Contains(body, "cannot place") {
		t.Fatalf("over capacity: %d %s", code, body)
	}

	code, body = call("GET", "/v1/nodes", ``)
	var nodes struct {
		Nodes []node.Node `json:"nodes"`
	}
	json.Unmarshal([]byte(body), &nodes)
	if code != 200 || len(nodes.Nodes) != 3 {
		t.Fatalf("nodes: %d %s", code, body)
	}
	n := nodes.Nodes[0].ID.String()
	if code, body := call("POST", "/v1/nodes/"+n+"/drain", ``); code != 200 || !strings.Contains(body, `"status":"draining"`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/nodes/"+n+"/undrain", ``); code != 200 || !strings.Contains(body, `"status":"active"`) {
		t.Fatalf("undrain: %d %s", code, body)
	}
	for _, path := range []string{"/v1/nodes", "/v1/instances"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("%s without the token: %d", path, resp.StatusCode)
		}
	}
}
