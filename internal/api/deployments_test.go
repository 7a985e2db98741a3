package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const testAppsDomain = "apps.test"

// testDeploys enqueues into the test's database without working anything.
func testDeploys(t *testing.T, pool *pgxpool.Pool) Deploys {
	t.Helper()
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return Deploys{DB: pool, Queue: q, AppsDomain: testAppsDomain}
}

func (e *env) pool() *pgxpool.Pool { return e.api.Deploys.DB.(*pgxpool.Pool) }

func (e *env) deploy(u user, body string) Deployment {
	e.t.Helper()
	res := e.do("POST", "/v1/deployments", body, bearer(u)...)
	if res.Code != http.StatusCreated {
		e.t.Fatalf("POST /v1/deployments %s: %d %s", body, res.Code, res.body)
	}
	var d Deployment
	res.decode(e.t, &d)
	return d
}

// count is the number of rows a query counts.
func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool().Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func archive(p Project, name string) string {
	return fmt.Sprintf(`{"project_id":"%s","archive_key":"uploads/%s/%s"}`, p.ID, p.ID, name)
}

func TestCreateDeployment(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	other := e.createProject(alice, `{"name":"other"}`)

	d := e.deploy(alice, archive(p, "src.tar.gz"))
	want := Deployment{
		ID: d.ID, ProjectID: p.ID, Status: deploymentStatus(deployment.StatusQueued), SourceType: sourceType(deployment.SourceUpload),
		ArchiveKey: "uploads/" + p.ID.String() + "/src.tar.gz", Replicas: p.Replicas, Environment: environment(deployment.EnvironmentProduction),
		URL: "https://" + d.ID.String() + "." + testAppsDomain, ProjectURL: "https://app." + testAppsDomain,
		CreatedBy: &alice.ID, CreatedAt: d.CreatedAt,
	}
	if d.CreatedBy == nil || *d.CreatedBy != alice.ID || d.CreatedAt.IsZero() {
		t.Fatalf("created %+v", d)
	}
	d.CreatedBy = want.CreatedBy
	if d != want {
		t.Fatalf("created\n%+v, want\n%+v", d, want)
	}
	// The build and its task were written with it.
	if n := e.count(`SELECT count(*) FROM builds WHERE deployment_id = $1`, d.ID); n != 1 {
		t.Fatalf("%d builds", n)
	}
	if n := e.count(`SELECT count(*) FROM river_job WHERE kind = 'build'`); n != 1 {
		t.Fatalf("%d build tasks", n)
	}

	// Bad requests write nothing.
	sha := strings.Repeat("a", 40)
	for _, body := range []string{
		fmt.Sprintf(`{"project_id":"%s","archive_key":"uploads/%s/src.tar.gz"}`, p.ID, other.ID), // another project's upload
		fmt.Sprintf(`{"project_id":"%s","archive_key":"uploads/%s/"}`, p.ID, p.ID),
		fmt.Sprintf(`{"project_id":"%s","archive_key":"uploads/%s/../%s/x.tar.gz"}`, p.ID, p.ID, other.ID),
		fmt.Sprintf(`{"project_id":"%s","archive_key":"src.tar.gz"}`, p.ID),
		fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s","archive_key":"uploads/%s/x.tar.gz"}`, p.ID, sha, p.ID),
		fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s"}`, p.ID, sha), // no repository connected
		fmt.Sprintf(`{"project_id":"%s"}`, p.ID),
		fmt.Sprintf(`{"project_id":"%s","archive_key":"uploads/%s/x.tar.gz"}`, uuid.NewString(), p.ID),
		`{"project_id":"not-a-uuid","archive_key":"uploads/x/y.tar.gz"}`,
		`{"archive_key":"uploads/x/y.tar.gz"}`,
		strings.TrimSuffix(archive(p, "x.tar.gz"), "}") + `,"colour":"red"}`,
	} {
		if res := e.do("POST", "/v1/deployments", body, bearer(alice)...); res.Code != http.StatusUnprocessableEntity {
			t.Errorf("POST %s: %d %s", body, res.Code, res.body)
		}
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 1 {
		t.Fatalf("%d deployments after bad requests", n)
	}
	if n := e.count(`SELECT count(*) FROM river_job`); n != 1 {
		t.Fatalf("%d tasks after bad requests", n)
	}

	// A commit, once the project has a repository.
	inst := id.New()
	e.exec(`INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
		VALUES ($1, 42, $2, 'octo', 'Organization')`, inst, p.OrganisationID)
	e.exec(`UPDATE projects SET github_installation_id = $1, github_repository_id = 7, github_repository_full_name = 'octo/app' WHERE id = $2`, inst, other.ID)
	c := e.deploy(alice, fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s"}`, other.ID, sha))
	if c.SourceType != sourceType(deployment.SourceGitHub) || c.CommitSHA != sha || c.ArchiveKey != "" || c.ProjectURL != "https://other."+testAppsDomain {
		t.Fatalf("commit deployment %+v", c)
	}
	e.wantProblem(e.do("POST", "/v1/deployments", fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s"}`, other.ID, strings.Repeat("A", 40)), bearer(alice)...), http.StatusUnprocessableEntity)
}

func TestGetDeploymentAndInstances(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	d := e.deploy(alice, archive(p, "src.tar.gz"))

	get := func() Deployment {
		t.Helper()
		res := e.do("GET", "/v1/deployments/"+d.ID.String(), "", session(alice)...)
		if res.Code != http.StatusOK {
			t.Fatalf("GET: %d %s", res.Code, res.body)
		}
		var got Deployment
		res.decode(t, &got)
		return got
	}
	if got := get(); got.ID != d.ID || got.Framework != "" || got.ActiveAt != nil || got.URL != d.URL {
		t.Fatalf("got %+v", got)
	}
	for _, path := range []string{"/v1/deployments/nope", "/v1/deployments/" + uuid.NewString(), "/v1/deployments/nope/instances", "/v1/deployments/" + uuid.NewString() + "/instances"} {
		if p := e.wantProblem(e.do("GET", path, "", session(alice)...), http.StatusNotFound); p.Detail != "no such deployment" {
			t.Errorf("%s: %+v", path, p)
		}
	}

	// Instances: none, then one on a node.
	res := e.do("GET", "/v1/deployments/"+d.ID.String()+"/instances", "", bearer(alice)...)
	if res.Code != http.StatusOK || !strings.Contains(res.body, `"items":[]`) {
		t.Fatalf("no instances: %d %s", res.Code, res.body)
	}
	n, err := node.Store{DB: e.pool()}.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	img := id.New()
	e.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, p.ID)
	e.exec(`UPDATE deployments SET image_id = $1 WHERE id = $2`, img, d.ID)
	in, err := instance.Store{DB: e.pool()}.Create(ctx, n, instance.New{DeploymentID: d.ID, Port: 8080, CPUMillis: 100, MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	res = e.do("GET", "/v1/deployments/"+d.ID.String()+"/instances", "", bearer(alice)...)
	var list struct {
		Items []instance.Instance `json:"items"`
	}
	res.decode(t, &list)
	if res.Code != http.StatusOK || len(list.Items) != 1 {
		t.Fatalf("instances: %d %s", res.Code, res.body)
	}
	if got := list.Items[0]; got.ID != in.ID || got.NodeID != n.ID || got.DeploymentID != d.ID || got.State != in.State || got.Desired != in.Desired {
		t.Fatalf("instance %+v, want %+v", got, in)
	}

	// What the build detected, and why it failed.
	e.exec(`UPDATE builds SET detected_kind = 'nextjs' WHERE deployment_id = $1`, d.ID)
	if _, err := (deployment.Store{DB: e.pool()}).SetStatus(ctx, d.ID, deployment.Move{To: deployment.StatusFailed, From: []deployment.Status{deployment.StatusQueued}, Reason: "build failed: exit 1"}); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.Framework != "nextjs" || got.Status != deploymentStatus(deployment.StatusFailed) || got.FailureReason != "build failed: exit 1" {
		t.Fatalf("got %+v", got)
	}
}

func TestListDeployments(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	other := e.createProject(alice, `{"name":"other"}`)
	var want []uuid.UUID
	for i := range 5 {
		want = append(want, e.deploy(alice, archive(p, fmt.Sprintf("%d.tar.gz", i))).ID)
	}
	otherID := e.deploy(alice, archive(other, "x.tar.gz")).ID
	slices.Reverse(want) // newest first

	list := func(query string) []uuid.UUID {
		t.Helper()
		var ids []uuid.UUID
		cursor := ""
		for pages := 0; pages < 10; pages++ {
			res := e.do("GET", "/v1/deployments?limit=2&cursor="+cursor+query, "", session(alice)...)
			var page struct {
				Items      []Deployment `json:"items"`
				NextCursor string       `json:"next_cursor"`
			}
			res.decode(t, &page)
			if res.Code != http.StatusOK || len(page.Items) > 2 {
				t.Fatalf("GET /v1/deployments: %d %s", res.Code, res.body)
			}
			for _, d := range page.Items {
				ids = append(ids, d.ID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		return ids
	}
	if got := list("&project_id=" + p.ID.String()); !slices.Equal(got, want) {
		t.Fatalf("project's deployments %v, want %v", got, want)
	}
	if got := list(""); !slices.Equal(got, append([]uuid.UUID{otherID}, want...)) {
		t.Fatalf("all deployments %v", got)
	}
	if got := list("&project_id=" + uuid.NewString()); len(got) != 0 {
		t.Fatalf("unknown project's deployments %v", got)
	}
	e.wantProblem(e.do("GET", "/v1/deployments?project_id=nope", "", session(alice)...), http.StatusUnprocessableEntity)
	e.wantProblem(e.do("GET", "/v1/deployments?cursor=!!", "", session(alice)...), http.StatusBadRequest)
	e.wantProblem(e.do("GET", "/v1/deployments?limit=0", "", session(alice)...), http.StatusUnprocessableEntity)
}

// The document lists the statuses and source types a client can meet.
func TestDeploymentEnumsAreDocumented(t *testing.T) {
	e := newEnv(t)
	res := e.do("GET", OpenAPIPath, "")
	for _, want := range []string{
		`"enum":["queued","building","deploying","active","retiring","stopped","failed"]`,
		`"enum":["github","upload"]`,
	} {
		if !strings.Contains(res.body, want) {
			t.Errorf("document lacks %s", want)
		}
	}
}

// TestDeploymentURLsFollowTheAppsURL: where the edge is reached with
// another scheme or port (dev's plain HTTP), deployments' URLs say so.
func TestDeploymentURLsFollowTheAppsURL(t *testing.T) {
	for _, tc := range []struct {
		d    Deploys
		want string
	}{
		{Deploys{AppsDomain: "apps.test"}, "https://app.apps.test"},
		{Deploys{AppsDomain: "zeitwork.localhost", AppsURL: "http://zeitwork.localhost:28082"}, "http://app.zeitwork.localhost:28082"},
		{Deploys{AppsDomain: "apps.test", AppsURL: "https://apps.test/"}, "https://app.apps.test"},
	} {
		if got := tc.d.appURL("app"); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.d, got, tc.want)
		}
	}
}
