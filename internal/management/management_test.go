package management_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const token = "mgmt-token"

type fixture struct {
	pool    *pgxpool.Pool
	srv     *httptest.Server
	reg     string
	project uuid.UUID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	reg := testenv.Registry(t)
	pool := testdb.New(t)
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	api := &management.API{Pool: pool, Queue: q, Images: image.Store{Pool: pool, Registry: image.Registry{Insecure: true}}, Token: token, Log: zlog.Discard()}
	f := &fixture{pool: pool, srv: httptest.NewServer(api.Handler()), reg: reg}
	t.Cleanup(f.srv.Close)

	f.project = testdb.Project(t, pool)
	return f
}

func (f *fixture) image(t *testing.T) db.Image {
	t.Helper()
	repo := f.reg + "/zeitwork-test/" + f.project.String()
	tag := id.New().String()
	img, _ := random.Image(1024, 1)
	ref, _ := name.ParseReference(repo+":"+tag, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	row, err := db.New(f.pool).ImageUpsert(context.Background(), db.ImageUpsertParams{ID: id.New(), ProjectID: f.project, Repository: repo, Tag: tag, Digest: digest.String()})
	if err != nil {
		t.Fatal(err)
	}
	return row
}

func (f *fixture) call(t *testing.T, method, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

func TestImagesListGetDownloadDelete(t *testing.T) {
	f := newFixture(t)
	a, b := f.image(t), f.image(t)

	resp := f.call(t, "GET", "/v1/images?limit=1", "")
	page := decode[struct {
		Images []management.Image `json:"images"`
		Next   *uuid.UUID         `json:"next"`
	}](t, resp)
	if resp.StatusCode != 200 || len(page.Images) != 1 || page.Images[0].ID != b.ID || page.Next == nil {
		t.Fatalf("first page: %d %+v", resp.StatusCode, page)
	}
	resp = f.call(t, "GET", "/v1/images?limit=1&before="+page.Next.String(), "")
	page = decode[struct {
		Images []management.Image `json:"images"`
		Next   *uuid.UUID         `json:"next"`
	}](t, resp)
	if len(page.Images) != 1 || page.Images[0].ID != a.ID {
		t.Fatalf("second page: %+v", page)
	}

	resp = f.call(t, "GET", "/v1/images/"+a.ID.String(), "")
	got := decode[management.Image](t, resp)
	if resp.StatusCode != 200 || got.Digest != a.Digest || got.Reference != a.Repository+"@"+a.Digest {
		t.Fatalf("get: %d %+v", resp.StatusCode, got)
	}

	resp = f.call(t, "GET", "/v1/images/"+a.ID.String()+"/download", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("download: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	names := map[string]bool{}
	tr := tar.NewReader(resp.Body)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
	}
	if !names["oci-layout"] || !names["index.json"] || !names["blobs/sha256/"+strings.TrimPrefix(a.Digest, "sha256:")] {
		t.Fatalf("archive entries: %v", names)
	}

	if resp := f.call(t, "DELETE", "/v1/images/"+a.ID.String(), ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp := f.call(t, "GET", "/v1/images/"+a.ID.String(), ""); resp.StatusCode != 404 {
		t.Fatalf("get after delete: %d", resp.StatusCode)
	}
}

func TestBuildRequestIsAcceptedOrRefusedWithReason(t *testing.T) {
	f := newFixture(t)
	resp := f.call(t, "POST", "/v1/images", `{"project_id": "`+f.project.String()+`", "archive_key": "uploads/app.tar.gz"}`)
	acc := decode[management.BuildAccepted](t, resp)
	// No Location: this server does not serve the deployment.
	if resp.StatusCode != 202 || acc.Status != string(build.StatusQueued) || resp.Header.Get("Location") != "" {
		t.Fatalf("accepted: %d %+v", resp.StatusCode, acc)
	}
	var jobs int
	f.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'build' AND args->>'build_id' = $1`, acc.BuildID.String()).Scan(&jobs)
	if jobs != 1 {
		t.Fatalf("%d build tasks for the accepted build", jobs)
	}

	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"project_id": "` + f.project.String() + `", "commit_sha": "xyz"}`, 422, "40 lower-case hex"},
		{`{"project_id": "` + f.project.String() + `"}`, 422, "give a commit or an archive"},
		{`{"project_id": "` + id.New().String() + `", "archive_key": "a.tar.gz"}`, 404, "not found"},
		{`{"archive_key": "a.tar.gz"}`, 400, "project_id is required"},
		{`{"project_id": "nope"}`, 400, "body"},
		{`{"project_id": "` + f.project.String() + `", "archive_key": "a", "extra": 1}`, 400, `unknown field "extra"`},
	} {
		resp := f.call(t, "POST", "/v1/images", tc.body)
		eb := decode[httpapi.ErrorBody](t, resp)
		if resp.StatusCode != tc.status || !strings.Contains(eb.Error, tc.want) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.body, resp.StatusCode, eb.Error, tc.status, tc.want)
		}
	}
	var deployments int
	f.pool.QueryRow(context.Background(), `SELECT count(*) FROM deployments`).Scan(&deployments)
	if deployments != 1 {
		t.Fatalf("%d deployments after one good and six bad requests", deployments)
	}
}

func TestEveryRouteNeedsTheToken(t *testing.T) {
	f := newFixture(t)
	for _, route := range []string{"GET /v1/images", "POST /v1/images", "GET /v1/images/" + id.New().String(), "GET /v1/images/x/download", "DELETE /v1/images/x"} {
		method, path, _ := strings.Cut(route, " ")
		req, _ := http.NewRequest(method, f.srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s without a token: %d", route, resp.StatusCode)
		}
	}
	if resp := f.call(t, "GET", "/v1/images/not-an-id", ""); resp.StatusCode != 400 {
		t.Fatalf("malformed id: %d", resp.StatusCode)
	}
	if resp := f.call(t, "GET", "/v1/images?limit=100000", ""); resp.StatusCode != 400 {
		t.Fatalf("huge limit: %d", resp.StatusCode)
	}
}
