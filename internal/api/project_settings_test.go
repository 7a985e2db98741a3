package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/project"
)

func TestUpdateProject(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"Shop"}`)
	e.createProject(alice, `{"name":"Taken"}`)
	path := "/v1/projects/" + p.ID.String()
	patch := func(body string, header ...string) response {
		t.Helper()
		return e.do("PATCH", path, body, append(session(alice), header...)...)
	}
	get := func() Project {
		t.Helper()
		var got Project
		e.do("GET", path, "", session(alice)...).decode(t, &got)
		return got
	}

	// Every setting at once; the slug moves the host.
	res := patch(`{"name":" Shop 2 ","slug":"shop-2","branch":"release/v2","root_directory":"apps/web","dockerfile_path":"docker/Dockerfile",
		"port":3000,"replicas":5,"cpu_millis":500,"memory_mb":1024,"health_check_path":"/healthz?full=1"}`)
	var got Project
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.Name != "Shop 2" || got.Slug != "shop-2" || got.Branch != "release/v2" || got.RootDirectory != "apps/web" ||
		got.DockerfilePath != "docker/Dockerfile" || got.Port != 3000 || got.Replicas != 5 || got.CPUMillis != 500 || got.MemoryMB != 1024 ||
		got.HealthCheckPath != "/healthz?full=1" || !got.UpdatedAt.After(p.UpdatedAt) {
		t.Fatalf("PATCH: %d %s", res.Code, res.body)
	}
	if g := get(); g != got {
		t.Fatalf("GET after PATCH: %+v, PATCH answered %+v", g, got)
	}

	// Merge-patch: what is left out stays; null clears the Dockerfile;
	// the merge-patch media type is accepted too.
	res = patch(`{"port":8081,"dockerfile_path":null}`, "Content-Type", "application/merge-patch+json")
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.Port != 8081 || got.DockerfilePath != "" || got.Replicas != 5 || got.Slug != "shop-2" {
		t.Fatalf("partial PATCH: %d %s", res.Code, res.body)
	}
	if res := patch(`{}`); res.Code != http.StatusOK || !strings.Contains(res.body, `"port":8081`) {
		t.Fatalf("empty PATCH: %d %s", res.Code, res.body)
	}

	// Bad input: a 4xx naming the field, and nothing written, even with
	// valid fields beside it.
	before := get()
	for body, field := range map[string]string{
		`{"name":"x","port":0}`:                                      "port",
		`{"name":"x","port":70000}`:                                  "port",
		`{"name":"x","replicas":2}`:                                  "replicas",
		`{"name":"x","replicas":101}`:                                "replicas",
		`{"name":"x","cpu_millis":5}`:                                "cpu_millis",
		`{"name":"x","memory_mb":8}`:                                 "memory_mb",
		`{"name":"x","memory_mb":1e9}`:                               "memory_mb",
		`{"name":"   "}`:                                             "name",
		`{"name":null}`:                                              "name",
		`{"name":"x","slug":"Bad_Slug"}`:                             "slug",
		`{"name":"x","slug":"0190a5f2-7f6b-7c3e-9a41-2b1c8d9e0f12"}`: "slug",
		`{"name":"x","slug":""}`:                                     "slug",
		`{"name":"x","branch":""}`:                                   "branch",
		`{"name":"x","branch":"a..b"}`:                               "branch",
		`{"name":"x","branch":"refs/heads/main"}`:                    "branch",
		`{"name":"x","branch":"has space"}`:                          "branch",
		`{"name":"x","root_directory":"/abs"}`:                       "root_directory",
		`{"name":"x","root_directory":"a/../../b"}`:                  "root_directory",
		`{"name":"x","dockerfile_path":""}`:                          "dockerfile_path",
		`{"name":"x","dockerfile_path":"../Dockerfile"}`:             "dockerfile_path",
		`{"name":"x","health_check_path":"healthz"}`:                 "health_check_path",
		`{"name":"x","health_check_path":"/a b"}`:                    "health_check_path",
		`{"name":"x","port":"80"}`:                                   "port",
		`{"name":"x","repository":"evil/repo"}`:                      "repository",
	} {
		res := patch(body)
		if res.Code != http.StatusUnprocessableEntity || !strings.Contains(res.body, field) {
			t.Errorf("%s: %d %s, want a 422 naming %s", body, res.Code, res.body, field)
		}
	}
	e.wantProblem(patch(`{"name":`), http.StatusBadRequest)
	if p := e.wantProblem(patch(`{"slug":"taken"}`), http.StatusConflict); !strings.Contains(p.Detail, "taken") {
		t.Errorf("taken slug: %+v", p)
	}
	if after := get(); after != before {
		t.Fatalf("written by refused patches: %+v, was %+v", after, before)
	}

	// Every field wrong at once: each is named.
	p2 := e.wantProblem(patch(`{"name":" ","branch":"-x","root_directory":"/r","dockerfile_path":"/d","health_check_path":"x"}`), http.StatusUnprocessableEntity)
	for _, field := range []string{"name", "branch", "root_directory", "dockerfile_path", "health_check_path"} {
		if !strings.Contains(p2.Detail, field+":") {
			t.Errorf("%q does not name %s", p2.Detail, field)
		}
	}

	// Not found: malformed, unknown, or someone else's.
	bob := e.signIn(2, "bob")
	for _, res := range []response{
		e.do("PATCH", "/v1/projects/nope", `{"port":1}`, session(alice)...),
		e.do("PATCH", "/v1/projects/"+id.New().String(), `{"port":1}`, session(alice)...),
		e.do("PATCH", path, `{"port":1}`, session(bob)...),
	} {
		e.wantProblem(res, http.StatusNotFound)
	}
	// A member of the organisation may change settings.
	if _, err := db.New(e.pool()).OrganisationMemberCreate(context.Background(), db.OrganisationMemberCreateParams{
		ID: id.New(), OrganisationID: p.OrganisationID, UserID: bob.ID, Role: project.RoleMember,
	}); err != nil {
		t.Fatal(err)
	}
	if res := e.do("PATCH", path, `{"replicas":3}`, bearer(bob)...); res.Code != http.StatusOK {
		t.Fatalf("member's PATCH: %d %s", res.Code, res.body)
	}
}

func TestDeleteProject(t *testing.T) {
	e := newEnv(t)
	owner := e.signIn(1, "owner")
	p := e.createProject(owner, `{"name":"Doomed"}`)
	path := "/v1/projects/" + p.ID.String()
	e.deploy(owner, archive(p, "src.tar.gz"))
	if res := e.do("PUT", path+"/env/TOKEN", `{"value":"v"}`, session(owner)...); res.Code != http.StatusOK {
		t.Fatalf("variable: %d %s", res.Code, res.body)
	}

	member, admin, stranger := e.signIn(2, "member"), e.signIn(3, "admin"), e.signIn(4, "stranger")
	for u, role := range map[user]string{member: project.RoleMember, admin: project.RoleAdmin} {
		if _, err := db.New(e.pool()).OrganisationMemberCreate(context.Background(), db.OrganisationMemberCreateParams{
			ID: id.New(), OrganisationID: p.OrganisationID, UserID: u.ID, Role: role,
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.wantProblem(e.do("DELETE", path, "", session(stranger)...), http.StatusNotFound)
	if pb := e.wantProblem(e.do("DELETE", path, "", session(member)...), http.StatusForbidden); !strings.Contains(pb.Detail, "owners and admins") {
		t.Fatalf("member: %+v", pb)
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 1 {
		t.Fatalf("%d deployments after refused deletes", n)
	}

	if res := e.do("DELETE", path, "", bearer(admin)...); res.Code != http.StatusNoContent {
		t.Fatalf("admin's DELETE: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("GET", path, "", session(owner)...), http.StatusNotFound)
	e.wantProblem(e.do("DELETE", path, "", session(owner)...), http.StatusNotFound)
	if n := e.count(`SELECT count(*) FROM deployments`) + e.count(`SELECT count(*) FROM environment_variables`) + e.count(`SELECT count(*) FROM builds`); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	// The slug is free again.
	if again := e.createProject(owner, `{"name":"Doomed"}`); again.Slug != p.Slug {
		t.Fatalf("slug after delete: %q", again.Slug)
	}
}
