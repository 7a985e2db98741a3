package nodeagent_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// fixedLogs is a runtime whose every instance logged the same bytes.
type fixedLogs struct{ text string }

func (o fixedLogs) Status(_ context.Context, id uuid.UUID) (runtime.Status, error) {
	return runtime.Status{InstanceID: id, State: runtime.StateRunning}, nil
}

func (o fixedLogs) List(context.Context) ([]runtime.Status, error) { return nil, nil }

func (o fixedLogs) Logs(context.Context, uuid.UUID, bool) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(o.text)), nil
}

// TestInstanceLogsResumeAtAnOffset: ?offset=N skips what a reader already
// has, and an offset beyond what the node holds (a rotation meanwhile)
// starts over at 0 and says so, rather than waiting for bytes that will
// never be those the reader missed.
func TestInstanceLogsResumeAtAnOffset(t *testing.T) {
	pool := testdb.New(t)
	self, err := nodeagent.Register(context.Background(), pool, ipam.DefaultCluster, t.TempDir(), node.Registration{
		Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	proj, img, dep := testdb.Project(t, pool), id.New(), id.New()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r', 't', 'sha256:' || repeat('0', 64))`, []any{img, proj}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'active', 'upload', 'k', 3, $3)`, []any{dep, proj, img}},
	} {
		if _, err := pool.Exec(context.Background(), stmt.sql, stmt.args...); err != nil {
			t.Fatal(err)
		}
	}
	url := nodeAPI(t, pool, self, fixedLogs{text: "one\ntwo\nthree\n"})
	call := func(method, path, body string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+clusterToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(b)
	}
	code, h, body := call("POST", "/v1/instances", `{"deployment_id":"`+dep.String()+`","port":8080,"cpu_millis":100,"memory_mb":64}`)
	if code != http.StatusCreated {
		t.Fatalf("create instance: %d %s", code, body)
	}
	logs := h.Get("Location") + "/logs"
	for _, tc := range []struct {
		query, offset, body string
	}{
		{"", "0", "one\ntwo\nthree\n"},
		{"?offset=4", "4", "two\nthree\n"},
		{"?offset=14", "14", ""},
		{"?offset=15", "0", "one\ntwo\nthree\n"},
		{"?follow=true&offset=4", "4", "two\nthree\n"},
		{"?follow=true&offset=15", "0", "one\ntwo\nthree\n"},
	} {
		code, h, body := call("GET", logs+tc.query, "")
		if code != http.StatusOK || h.Get("X-Log-Offset") != tc.offset || body != tc.body {
			t.Errorf("GET %s: %d, X-Log-Offset %q, %q; want 200, %s, %q", tc.query, code, h.Get("X-Log-Offset"), body, tc.offset, tc.body)
		}
	}
	for _, bad := range []string{"-1", "x", "1e3"} {
		if code, _, body := call("GET", logs+"?offset="+bad, ""); code != http.StatusBadRequest {
			t.Errorf("offset %s: %d %s, want 400", bad, code, body)
		}
	}
}
