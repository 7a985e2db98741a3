package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/project"
)

func (e *env) createProject(u user, body string) Project {
	e.t.Helper()
	res := e.do("POST", "/v1/projects", body, bearer(u)...)
	if res.Code != http.StatusCreated {
		e.t.Fatalf("POST /v1/projects %s: %d %s", body, res.Code, res.body)
	}
	var p Project
	res.decode(e.t, &p)
	return p
}

func TestProjects(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")

	p := e.createProject(alice, `{"name":"  My App! "}`)
	if p.Slug != "my-app" || p.Name != "My App!" || p.Replicas != 3 || p.Branch != "main" || p.ActiveDeploymentID != nil {
		t.Fatalf("created %+v", p)
	}
	res := e.do("GET", "/v1/projects/"+p.ID.String(), "", session(alice)...)
	var got Project
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.ID != p.ID || got.Slug != p.Slug {
		t.Fatalf("GET: %d %s", res.Code, res.body)
	}

	// Slugs: taken, malformed, shaped like a deployment id, or none made
	// from the name.
	e.wantProblem(e.do("POST", "/v1/projects", `{"name":"my app"}`, bearer(alice)...), http.StatusConflict)
	for _, body := range []string{
		`{"name":"x","slug":"Bad_Slug"}`,
		`{"name":"x","slug":"-x"}`,
		`{"name":"x","slug":"` + uuid.NewString() + `"}`,
		`{"name":"x","slug":"` + strings.ReplaceAll(uuid.NewString(), "-", "") + `"}`,
		`{"name":"` + uuid.NewString() + `"}`,
		`{"name":"!!!"}`,
		`{"name":""}`,
		`{"name":"x","organisation_id":"` + uuid.NewString() + `"}`,
	} {
		e.wantProblem(e.do("POST", "/v1/projects", body, bearer(alice)...), http.StatusUnprocessableEntity)
	}
	// How it runs can be said at creation (the first deployment of a
	// repository starts at once); what is wrong is named and nothing made.
	small := e.createProject(alice, `{"name":"small","port":3000,"replicas":4,"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz","dockerfile_path":"deploy/Dockerfile"}`)
	if small.Port != 3000 || small.Replicas != 4 || small.CPUMillis != 100 || small.MemoryMB != 64 || small.HealthCheckPath != "/healthz" ||
		small.DockerfilePath != "deploy/Dockerfile" {
		t.Fatalf("created with settings: %+v", small)
	}
	for _, body := range []string{
		`{"name":"bad","health_check_path":"healthz"}`,
		`{"name":"bad","dockerfile_path":"../Dockerfile"}`,
		`{"name":"bad","replicas":2}`,
		`{"name":"bad","port":0}`,
	} {
		e.wantProblem(e.do("POST", "/v1/projects", body, bearer(alice)...), http.StatusUnprocessableEntity)
	}
	if n := e.count(`SELECT count(*) FROM projects WHERE name = 'bad'`); n != 0 {
		t.Fatalf("%d projects made from refused bodies", n)
	}
	if named := e.createProject(alice, `{"name":"Other","slug":"custom-1"}`); named.Slug != "custom-1" {
		t.Fatalf("slug %q", named.Slug)
	}
	if inOrg := e.createProject(alice, fmt.Sprintf(`{"name":"In org","organisation_id":"%s"}`, p.OrganisationID)); inOrg.OrganisationID != p.OrganisationID {
		t.Fatalf("organisation %s", inOrg.OrganisationID)
	}

	// Pages follow each other without gaps or repeats.
	for i := range 4 {
		e.createProject(alice, fmt.Sprintf(`{"name":"p%d"}`, i))
	}
	var ids []uuid.UUID
	cursor := ""
	for pages := 0; pages < 10; pages++ {
		res := e.do("GET", "/v1/projects?limit=3&cursor="+cursor, "", session(alice)...)
		var page struct {
			Items      []Project `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		res.decode(t, &page)
		if res.Code != http.StatusOK || len(page.Items) > 3 {
			t.Fatalf("GET /v1/projects: %d %s", res.Code, res.body)
		}
		for _, p := range page.Items {
			ids = append(ids, p.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(ids) != 8 || len(slices.Compact(slices.Clone(ids))) != 8 || ids[0] != p.ID {
		t.Fatalf("listed %d projects: %v", len(ids), ids)
	}
}

// TestStrangersAndAnonymousSeeNothing calls every documented operation
// as another signed-in user (nothing of the owner's is found, or shown)
// and without credentials (401), so that an endpoint added without
// authorization fails here.
func TestStrangersAndAnonymousSeeNothing(t *testing.T) {
	e := newEnv(t)
	owner := e.signIn(1, "owner")
	p := e.createProject(owner, `{"name":"Secret Project"}`)
	var tok struct {
		ID uuid.UUID `json:"id"`
	}
	e.do("POST", "/v1/tokens", `{"name":"owner-token"}`, session(owner)...).decode(t, &tok)
	sessions, err := e.api.Accounts.Sessions(t.Context(), owner.ID, uuid.Nil, 10)
	if err != nil || len(sessions) != 1 {
		t.Fatalf("owner's sessions: %v, %v", sessions, err)
	}
	ownerSession := sessions[0].ID
	// What must never appear in a stranger's answer.
	secrets := []string{p.ID.String(), p.Slug, p.Name, p.OrganisationID.String(), tok.ID.String(), "owner-token", owner.ID.String(), ownerSession.String()}

	// How a stranger calls each operation, aimed at the owner's resources.
	calls := map[operation]struct {
		path, body string
		status     int
	}{
		{"GET", "/v1/health"}:              {"/v1/health", "", http.StatusOK},
		{"GET", "/v1/me"}:                  {"/v1/me", "", http.StatusOK},
		{"GET", "/v1/tokens"}:              {"/v1/tokens", "", http.StatusOK},
		{"POST", "/v1/tokens"}:             {"/v1/tokens", `{"name":"mine"}`, http.StatusCreated},
		{"DELETE", "/v1/tokens/{id}"}:      {"/v1/tokens/" + tok.ID.String(), "", http.StatusNotFound},
		{"DELETE", "/v1/sessions/current"}: {"/v1/sessions/current", "", http.StatusNoContent},
		{"GET", "/v1/sessions"}:            {"/v1/sessions", "", http.StatusOK},
		{"DELETE", "/v1/sessions/{id}"}:    {"/v1/sessions/" + ownerSession.String(), "", http.StatusNotFound},
		{"GET", "/v1/projects"}:            {"/v1/projects", "", http.StatusOK},
		{"POST", "/v1/projects"}:           {"/v1/projects", fmt.Sprintf(`{"name":"x","organisation_id":"%s"}`, p.OrganisationID), http.StatusUnprocessableEntity},
		{"GET", "/v1/projects/{id}"}:       {"/v1/projects/" + p.ID.String(), "", http.StatusNotFound},
	}
	{ // deployments
		type call = struct {
			path, body string
			status     int
		}
		dep := e.deploy(owner, archive(p, "src.tar.gz"))
		secrets = append(secrets, dep.ID.String(), dep.ArchiveKey)
		calls[operation{"GET", "/v1/deployments"}] = call{"/v1/deployments?project_id=" + p.ID.String(), "", http.StatusOK}
		calls[operation{"POST", "/v1/deployments"}] = call{"/v1/deployments", archive(p, "evil.tar.gz"), http.StatusUnprocessableEntity}
		calls[operation{"GET", "/v1/deployments/{id}"}] = call{"/v1/deployments/" + dep.ID.String(), "", http.StatusNotFound}
		calls[operation{"GET", "/v1/deployments/{id}/instances"}] = call{"/v1/deployments/" + dep.ID.String() + "/instances", "", http.StatusNotFound}
		defer func() {
			if n := e.count(`SELECT count(*) FROM deployments`); n != 1 {
				t.Errorf("%d deployments after the stranger's calls", n)
			}
		}()
	}
	{ // environment variables
		type call = struct {
			path, body string
			status     int
		}
		base := "/v1/projects/" + p.ID.String() + "/env"
		if res := e.do("PUT", base+"/API_TOKEN", `{"value":"owner-value-s3cr3t"}`, session(owner)...); res.Code != http.StatusOK {
			t.Fatalf("owner's variable: %d %s", res.Code, res.body)
		}
		secrets = append(secrets, "owner-value-s3cr3t", "API_TOKEN")
		calls[operation{"GET", "/v1/projects/{id}/env"}] = call{base, "", http.StatusNotFound}
		calls[operation{"GET", "/v1/projects/{id}/env/{name}"}] = call{base + "/API_TOKEN", "", http.StatusNotFound}
		calls[operation{"PUT", "/v1/projects/{id}/env/{name}"}] = call{base + "/API_TOKEN", `{"value":"stranger"}`, http.StatusNotFound}
		calls[operation{"DELETE", "/v1/projects/{id}/env/{name}"}] = call{base + "/API_TOKEN", "", http.StatusNotFound}
		defer func() {
			var v struct {
				Value string `json:"value"`
			}
			e.do("GET", base+"/API_TOKEN", "", session(owner)...).decode(t, &v)
			if v.Value != "owner-value-s3cr3t" {
				t.Errorf("owner's variable after the stranger's calls: %q", v.Value)
			}
		}()
	}
	{ // a deployment's status: neither cancelled nor rolled back by a stranger
		var dep uuid.UUID
		if err := e.pool().QueryRow(t.Context(), `SELECT id FROM deployments`).Scan(&dep); err != nil {
			t.Fatal(err)
		}
		calls[operation{"PUT", "/v1/deployments/{id}/status"}] = struct {
			path, body string
			status     int
		}{"/v1/deployments/" + dep.String() + "/status", `{"status":"cancelled"}`, http.StatusNotFound}
		defer func() {
			if n := e.count(`SELECT count(*) FROM deployments WHERE status = 'queued'`); n != 1 {
				t.Errorf("the owner's deployment is no longer queued after the stranger's calls")
			}
		}()
	}
	{ // project settings, deletion and custom domains
		type call = struct {
			path, body string
			status     int
		}
		e.withDomains()
		base := "/v1/projects/" + p.ID.String()
		dom := e.addDomain(owner, p, `{"name":"secret-shop.example.com"}`)
		secrets = append(secrets, dom.Name, dom.DNSRecords[1].Value, dom.ID.String())
		calls[operation{"PATCH", "/v1/projects/{id}"}] = call{base, `{"name":"stolen","port":9999}`, http.StatusNotFound}
		calls[operation{"DELETE", "/v1/projects/{id}"}] = call{base, "", http.StatusNotFound}
		calls[operation{"GET", "/v1/projects/{id}/domains"}] = call{base + "/domains", "", http.StatusNotFound}
		calls[operation{"POST", "/v1/projects/{id}/domains"}] = call{base + "/domains", `{"name":"stranger.example.com"}`, http.StatusNotFound}
		calls[operation{"GET", "/v1/projects/{id}/domains/{domain}"}] = call{base + "/domains/" + dom.Name, "", http.StatusNotFound}
		calls[operation{"DELETE", "/v1/projects/{id}/domains/{domain}"}] = call{base + "/domains/" + dom.Name, "", http.StatusNotFound}
		calls[operation{"POST", "/v1/projects/{id}/domains/{domain}/verify"}] = call{base + "/domains/" + dom.Name + "/verify", "", http.StatusNotFound}
		defer func() {
			var got Project
			e.do("GET", base, "", session(owner)...).decode(t, &got)
			if got.Name != p.Name || got.Port != p.Port {
				t.Errorf("owner's project changed by a stranger: %+v", got)
			}
			if n := e.count(`SELECT count(*) FROM domains WHERE name = $1 AND last_checked_at IS NULL`, dom.Name); n != 1 {
				t.Errorf("owner's domain removed or checked by a stranger")
			}
			if n := e.count(`SELECT count(*) FROM domains`); n != 1 {
				t.Errorf("%d domains after the stranger's calls", n)
			}
		}()
	}
	{ // device sign-in: a user code is approved by whoever it is shown to,
		// so any admitted user may look it up and decide; starting and
		// polling are anonymous (the device has no credential yet)
		type call = struct {
			path, body string
			status     int
		}
		shown, err := e.api.devices().Start(t.Context(), "a laptop")
		if err != nil {
			t.Fatal(err)
		}
		other, _ := e.api.devices().Start(t.Context(), "another laptop")
		looked, _ := e.api.devices().Start(t.Context(), "a third laptop")
		calls[operation{"POST", "/v1/auth/device"}] = call{"/v1/auth/device", `{"client_name":"cli"}`, http.StatusOK}
		calls[operation{"POST", "/v1/auth/device/token"}] = call{"/v1/auth/device/token", `{"device_code":"` + strings.Repeat("A", 43) + `"}`, http.StatusBadRequest}
		calls[operation{"GET", "/v1/auth/device"}] = call{"/v1/auth/device?user_code=" + looked.UserCode, "", http.StatusOK}
		calls[operation{"POST", "/v1/auth/device/approve"}] = call{"/v1/auth/device/approve", `{"user_code":"` + shown.UserCode + `"}`, http.StatusNoContent}
		calls[operation{"POST", "/v1/auth/device/deny"}] = call{"/v1/auth/device/deny", `{"user_code":"` + other.UserCode + `"}`, http.StatusNoContent}
	}
	{ // the GitHub App: the owner's installation and the project's repository
		type call = struct {
			path, body string
			status     int
		}
		const ghID = 987654321
		if _, err := e.api.Projects.RecordInstallation(t.Context(), owner.ID, uuid.Nil, project.GitHubInstallation{ID: ghID, AccountLogin: "owner-gh", AccountType: "User"}); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, "owner-gh")
		repo := "/v1/projects/" + p.ID.String() + "/repository"
		calls[operation{"GET", "/v1/github/install"}] = call{"/v1/github/install?organisation_id=" + p.OrganisationID.String(), "", http.StatusUnprocessableEntity}
		calls[operation{"GET", "/v1/github/setup"}] = call{"/v1/github/setup?installation_id=987654321&setup_action=install&state=s&code=c", "", http.StatusBadRequest}
		calls[operation{"GET", "/v1/github/installations"}] = call{"/v1/github/installations", "", http.StatusOK}
		calls[operation{"GET", "/v1/github/installations/{installation_id}/repositories"}] = call{"/v1/github/installations/987654321/repositories", "", http.StatusNotFound}
		calls[operation{"GET", "/v1/github/installations/{installation_id}/repositories/{repository_id}/branches"}] = call{"/v1/github/installations/987654321/repositories/7/branches", "", http.StatusNotFound}
		calls[operation{"PUT", "/v1/projects/{id}/repository"}] = call{repo, `{"installation_id":987654321,"full_name":"owner-gh/app"}`, http.StatusNotFound}
		calls[operation{"DELETE", "/v1/projects/{id}/repository"}] = call{repo, "", http.StatusNotFound}
		defer func() {
			var org uuid.UUID
			if err := e.pool().QueryRow(t.Context(), `SELECT organisation_id FROM github_installations WHERE github_installation_id = $1`, ghID).Scan(&org); err != nil || org != p.OrganisationID {
				t.Errorf("the owner's installation after the stranger's calls: %s, %v", org, err)
			}
		}()
	}
	{ // uploads: neither handed out nor stored for a stranger
		type call = struct {
			path, body string
			status     int
		}
		s := e.withUploads(false)
		base := "/v1/projects/" + p.ID.String() + "/uploads"
		calls[operation{"POST", "/v1/projects/{id}/uploads"}] = call{base, "", http.StatusNotFound}
		calls[operation{"PUT", "/v1/projects/{id}/uploads/{upload_id}"}] = call{base + "/" + uuid.NewString(), "archive", http.StatusNotFound}
		defer func() {
			if keys := objects(t, s); len(keys) != 0 {
				t.Errorf("the stranger's calls stored %v", keys)
			}
		}()
	}
	{ // a deployment's logs: neither page nor stream for a stranger
		var dep uuid.UUID
		if err := e.pool().QueryRow(t.Context(), `SELECT id FROM deployments`).Scan(&dep); err != nil {
			t.Fatal(err)
		}
		calls[operation{"GET", "/v1/deployments/{id}/logs"}] = struct {
			path, body string
			status     int
		}{"/v1/deployments/" + dep.String() + "/logs", "", http.StatusNotFound}
	}
	// Sign-in and the waitlist are public: a callback without the
	// browser's state is refused; admin operations are hidden.
	for op, c := range map[operation]struct {
		path, body string
		status     int
	}{
		{"GET", "/v1/auth/github"}:             {"/v1/auth/github", "", http.StatusFound},
		{"GET", "/v1/auth/github/callback"}:    {"/v1/auth/github/callback?code=c&state=s", "", http.StatusBadRequest},
		{"POST", "/v1/waitlist"}:               {"/v1/waitlist", `{"email":"me@example.com"}`, http.StatusAccepted},
		{"GET", "/v1/admin/waitlist"}:          {"/v1/admin/waitlist", "", http.StatusNotFound},
		{"POST", "/v1/admin/users/{id}/admit"}: {"/v1/admin/users/" + owner.ID.String() + "/admit", "", http.StatusNotFound},
	} {
		calls[op] = c
	}
	public := []string{"/v1/health", "/v1/auth/github", "/v1/auth/github/callback", "/v1/waitlist"}
	public = append(public, "/v1/auth/device", "/v1/auth/device/token") // device sign-in: POSTs only
	d := e.document()
	for _, op := range d.operations() {
		c, ok := calls[op]
		if !ok {
			t.Errorf("%s %s: no stranger case; add one", op.method, op.path)
			continue
		}
		t.Run(op.method+" "+op.path, func(t *testing.T) {
			secured := len(d.Paths[op.path][strings.ToLower(op.method)].Security) > 0
			if !slices.Contains(public, op.path) && !secured {
				t.Fatalf("documented without security")
			}
			anon := e.do(op.method, c.path, c.body)
			if secured && anon.Code != http.StatusUnauthorized {
				t.Errorf("anonymous: %d %s", anon.Code, anon.body)
			}
			if bad := e.do(op.method, c.path, c.body, "Authorization", "Bearer zw_forged"); secured && bad.Code != http.StatusUnauthorized {
				t.Errorf("forged token: %d %s", bad.Code, bad.body)
			}
			// A fresh session per call: signing out must not end the
			// stranger's other calls.
			s := e.signIn(2, "stranger")
			res := e.do(op.method, c.path, c.body, session(s)...)
			if res.Code != c.status {
				t.Errorf("stranger: %d, want %d: %s", res.Code, c.status, res.body)
			}
			for _, secret := range secrets {
				if strings.Contains(res.body, secret) {
					t.Errorf("stranger's answer leaks %q: %s", secret, res.body)
				}
			}
		})
	}
	// The owner's token, session and project are untouched.
	if res := e.do("GET", "/v1/projects/"+p.ID.String(), "", session(owner)...); res.Code != http.StatusOK {
		t.Fatalf("owner's project: %d", res.Code)
	}
	var list struct {
		Items []Token `json:"items"`
	}
	e.do("GET", "/v1/tokens", "", session(owner)...).decode(t, &list)
	if !slices.ContainsFunc(list.Items, func(x Token) bool { return x.ID == tok.ID }) {
		t.Fatalf("owner's token revoked by a stranger: %+v", list)
	}
}
