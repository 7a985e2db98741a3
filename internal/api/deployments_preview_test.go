package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
)

func TestDeploymentsShowTheirEnvironment(t *testing.T) {
	e := newEnv(t)
	alice, mallory := e.signIn(1, "alice"), e.signIn(2, "mallory")
	p := e.createProject(alice, `{"name":"app"}`)
	img := id.New()
	e.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, p.ID)
	// pushed inserts what a push webhook and the operator make of a push.
	pushed := func(env deployment.Environment, ref string, status deployment.Status) uuid.UUID {
		t.Helper()
		d := id.New()
		e.exec(`INSERT INTO deployments (id, project_id, status, environment, source_type, github_commit_sha, github_ref, pushed_by, replicas, image_id, stop_at, active_at)
			VALUES ($1, $2, $3, $4, 'github', repeat('a', 40), $5, 'octocat', 3, $6, now() + interval '1 hour', now())`, d, p.ID, string(status), string(env), ref, img)
		return d
	}
	prod := pushed(deployment.EnvironmentProduction, "refs/heads/main", deployment.StatusActive)
	e.exec(`UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, prod, p.ID)
	preview := pushed(deployment.EnvironmentPreview, "refs/heads/feature/login", deployment.StatusActive)
	retired := pushed(deployment.EnvironmentPreview, "refs/heads/feature/login", deployment.StatusRetiring)
	upload := e.deploy(alice, archive(p, "src.tar.gz"))

	get := func(d uuid.UUID) Deployment {
		t.Helper()
		res := e.do("GET", "/v1/deployments/"+d.String(), "", bearer(alice)...)
		if res.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", d, res.Code, res.body)
		}
		var got Deployment
		res.decode(t, &got)
		return got
	}
	projectURL := "https://app." + testAppsDomain
	if got := get(prod); got.Environment != environment(deployment.EnvironmentProduction) || got.Branch != "main" || got.PushedBy != "octocat" || got.URL != projectURL {
		t.Errorf("live production deployment: %+v", got)
	}
	if got := get(preview); got.Environment != environment(deployment.EnvironmentPreview) || got.Branch != "feature/login" || got.PushedBy != "octocat" ||
		got.URL != "https://"+preview.String()+"."+testAppsDomain || got.ProjectURL != projectURL {
		t.Errorf("preview: %+v", got)
	}
	if upload.Environment != environment(deployment.EnvironmentProduction) || upload.Branch != "" || upload.PushedBy != "" || upload.URL != "https://"+upload.ID.String()+"."+testAppsDomain {
		t.Errorf("queued upload: %+v", upload)
	}

	list := func(u user, query string) []uuid.UUID {
		t.Helper()
		res := e.do("GET", "/v1/deployments"+query, "", bearer(u)...)
		if res.Code != http.StatusOK {
			t.Fatalf("GET /v1/deployments%s: %d %s", query, res.Code, res.body)
		}
		var page listDeploymentsOutput
		res.decode(t, &page.Body)
		var ids []uuid.UUID
		for _, d := range page.Body.Items {
			ids = append(ids, d.ID)
		}
		return ids
	}
	for query, want := range map[string][]uuid.UUID{
		// Newest first.
		"":                        {upload.ID, retired, preview, prod},
		"?environment=preview":    {retired, preview},
		"?environment=production": {upload.ID, prod},
		"?environment=preview&project_id=" + p.ID.String(): {retired, preview},
		"?environment=preview&limit=1":                     {retired},
	} {
		if got := list(alice, query); !equalIDs(got, want) {
			t.Errorf("list%s = %v, want %v", query, got, want)
		}
	}
	if got := list(mallory, "?environment=preview"); len(got) != 0 {
		t.Errorf("a stranger lists %v", got)
	}
	e.wantProblem(e.do("GET", "/v1/deployments?environment=staging", "", bearer(alice)...), http.StatusUnprocessableEntity)

	// A preview is never rolled back to, active or not: nothing enqueued.
	for _, d := range []uuid.UUID{preview, retired} {
		p := e.wantProblem(e.do("PUT", "/v1/deployments/"+d.String()+"/status", `{"status":"active"}`, bearer(alice)...), http.StatusConflict)
		if !strings.Contains(p.Detail, "preview") {
			t.Errorf("rollback to preview %s refused with %q", d, p.Detail)
		}
	}
	if n := e.count(`SELECT count(*) FROM river_job WHERE kind = $1`, deployment.RollbackTask{}.Kind()); n != 0 {
		t.Fatalf("%d rollback tasks after refusals", n)
	}
}

func equalIDs(a, b []uuid.UUID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
