package api

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const testAppID = 4711

// testAppKey is made once: 2048-bit generation is slow.
var testAppKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testGitHubApp is the App pointed at GitHub (or an emulator) at base.
func testGitHubApp(t *testing.T, base string) *githubapp.App {
	t.Helper()
	key := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testAppKey())})
	app, err := githubapp.New(githubapp.Config{ID: testAppID, PrivateKey: key, Slug: "zeitwork-test", APIURL: base, WebURL: base})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// appEnv is the API on a real listener with the App and sign-in pointed
// at a GitHub emulator. GitHub's alice has the App installed on her
// account with alice/app, whose main and dev branches have a commit each.
type appEnv struct {
	*env
	emu       *githubemu.Emulator
	url       string
	inst      githubemu.Installation
	repo      githubemu.Repository
	main, dev string // head commits
	alice     user   // Zeitwork's alice, whose GitHub account is alice
}

func newAppEnv(t *testing.T) *appEnv {
	t.Helper()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	emu := githubemu.New(githubemu.App{
		ID: testAppID, Slug: "zeitwork-test", PublicKey: &testAppKey().PublicKey, ClientID: "Iv1.test", ClientSecret: "shh",
		// As on GitHub, the App's first callback URL is sign-in's, and
		// installations come back there.
		CallbackURL: srv.URL + "/v1/auth/github/callback", AuthorizeOnInstall: true,
	})
	gh, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	pool := testdb.New(t)
	a := &API{
		Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool}, Deploys: testDeploys(t, pool), Log: zlog.Discard(), Dev: true,
		GitHub: &GitHubSignIn{ClientID: "Iv1.test", ClientSecret: "shh", WebURL: gh.APIURL, APIURL: gh.APIURL},
		App:    testGitHubApp(t, gh.APIURL),
	}
	handler, routes := a.build()
	h = handler
	e := &appEnv{env: &env{t: t, api: a, handler: handler, routes: routes}, emu: emu, url: srv.URL}

	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null",
			"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com", "GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", ".")
	git("commit", "-q", "-m", "first page")
	e.main = git("rev-parse", "HEAD")
	git("checkout", "-q", "-b", "dev")
	git("commit", "-q", "--allow-empty", "-m", "on dev")
	e.dev = git("rev-parse", "HEAD")

	emu.AddUser(githubemu.User{Login: "alice", Emails: []githubemu.Email{{Email: "alice@example.com", Primary: true, Verified: true}}})
	emu.AddUser(githubemu.User{Login: "bob", Emails: []githubemu.Email{{Email: "bob@example.com", Primary: true, Verified: true}}})
	if e.inst, err = emu.AddInstallation(githubemu.Installation{Account: "alice"}); err != nil {
		t.Fatal(err)
	}
	if e.repo, err = emu.AddRepository(e.inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	emu.ApproveAs("alice")
	e.alice = e.signIn(1, "alice")
	return e
}

// startInstall starts an installation as u and plays GitHub's install
// page; it returns the query GitHub sends back to the setup URL and the
// install cookie the API set.
func (e *appEnv) startInstall(u user, query string) (url.Values, string) {
	e.t.Helper()
	res := e.do("GET", "/v1/github/install"+query, "", session(u)...)
	if res.Code != http.StatusFound {
		e.t.Fatalf("GET /v1/github/install%s: %d %s", query, res.Code, res.body)
	}
	var cookie string
	for _, c := range res.Result().Cookies() {
		if c.Name == installCookie {
			cookie = c.Value
		}
	}
	page, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(res.Header().Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	page.Body.Close()
	back, err := page.Location()
	if err != nil || back.Path != "/v1/auth/github/callback" {
		e.t.Fatalf("GitHub's install page sent the browser to %v (%v)", back, err)
	}
	return back.Query(), cookie
}

// finishInstall is the browser of u arriving at the setup URL.
func (e *appEnv) finishInstall(u user, q url.Values, cookie string) response {
	e.t.Helper()
	return e.do("GET", "/v1/github/setup?"+q.Encode(), "", "Cookie", SessionCookie+"="+u.cookie+"; "+installCookie+"="+cookie)
}

// install records alice's installation through the flow.
func (e *appEnv) install() {
	e.t.Helper()
	q, cookie := e.startInstall(e.alice, "")
	if res := e.finishInstall(e.alice, q, cookie); res.Code != http.StatusFound {
		e.t.Fatalf("setup: %d %s", res.Code, res.body)
	}
}

func (e *appEnv) installations(u user) []Installation {
	e.t.Helper()
	var page struct {
		Items []Installation `json:"items"`
	}
	res := e.do("GET", "/v1/github/installations", "", bearer(u)...)
	if res.Code != http.StatusOK {
		e.t.Fatalf("GET /v1/github/installations: %d %s", res.Code, res.body)
	}
	res.decode(e.t, &page)
	return page.Items
}

func TestGitHubAppInstallInTheBrowser(t *testing.T) {
	e := newAppEnv(t)
	b := newBrowser(t)
	base, _ := url.Parse(e.url)
	b.Jar.SetCookies(base, []*http.Cookie{{Name: SessionCookie, Value: e.alice.cookie, Path: "/"}})
	status, landed, body := b.get(t, e.url+"/v1/github/install?next=/projects/new")
	if landed.String() != e.url+"/projects/new" || status != http.StatusNotFound {
		t.Fatalf("landed on %s (%d %s) via %v", landed, status, body, b.visited)
	}
	if len(b.visited) != 4 || !strings.HasPrefix(b.visited[1], e.url+"/v1/auth/github/callback?") || !strings.HasPrefix(b.visited[2], e.url+"/v1/github/setup?") {
		t.Fatalf("visited %v", b.visited)
	}
	got := e.installations(e.alice)
	if len(got) != 1 || got[0].ID != e.inst.ID || got[0].AccountLogin != "alice" || got[0].AccountType != "User" || got[0].Suspended {
		t.Fatalf("installations: %+v", got)
	}
	me, _ := e.api.Projects.Organisation(t.Context(), e.alice.ID, uuid.Nil)
	if got[0].OrganisationID != me {
		t.Fatalf("linked to %s, not alice's organisation %s", got[0].OrganisationID, me)
	}
	// The install cookie is spent.
	for _, c := range b.Jar.Cookies(&url.URL{Scheme: "http", Host: base.Host, Path: installCookiePath}) {
		if c.Name == installCookie {
			t.Errorf("install cookie kept: %+v", c)
		}
	}

	// Installing again (GitHub's setup_action=update) refreshes the row,
	// and a suspension GitHub reports is recorded.
	e.emu.SetSuspended(e.inst.ID, true)
	e.install()
	if got := e.installations(e.alice); len(got) != 1 || !got[0].Suspended {
		t.Fatalf("after the update: %+v", got)
	}
}

func TestGitHubAppSetupRefusals(t *testing.T) {
	e := newAppEnv(t)
	bobInst, err := e.emu.AddInstallation(githubemu.Installation{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	rows := func() int { return e.count(`SELECT count(*) FROM github_installations`) }

	// A forged installation id: alice's GitHub account cannot use bob's
	// installation, whatever the browser says.
	q, cookie := e.startInstall(e.alice, "")
	q.Set("installation_id", strconv.FormatInt(bobInst.ID, 10))
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusForbidden)
	// Nor an installation that does not exist.
	q, cookie = e.startInstall(e.alice, "")
	q.Set("installation_id", "999999")
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusForbidden)

	// The state must be this browser's and this user's.
	q, cookie = e.startInstall(e.alice, "")
	good := q.Get("state")
	q.Set("state", "forged")
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusBadRequest)
	q.Set("state", good)
	mallory := e.signIn(3, "mallory")
	e.wantProblem(e.finishInstall(mallory, q, cookie), http.StatusBadRequest)
	e.wantProblem(e.finishInstall(e.alice, q, ""), http.StatusBadRequest)
	// Without a code GitHub takes, nothing proves who installed.
	q.Del("code")
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusBadRequest)
	q.Set("code", "not-a-code")
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusBadRequest)
	if n := rows(); n != 0 {
		t.Fatalf("%d installations recorded by refused setups", n)
	}

	// Linking to an organisation one is not in, or sending the browser
	// elsewhere afterwards, is refused before GitHub is visited.
	e.wantProblem(e.do("GET", "/v1/github/install?organisation_id="+uuid.NewString(), "", session(e.alice)...), http.StatusUnprocessableEntity)
	e.wantProblem(e.do("GET", "/v1/github/install?next=https://evil.example/", "", session(e.alice)...), http.StatusBadRequest)

	// An installation linked to another organisation stays there.
	bob := e.signIn(2, "bob")
	if _, err := e.api.Projects.RecordInstallation(t.Context(), bob.ID, uuid.Nil, project.GitHubInstallation{ID: e.inst.ID, AccountLogin: "alice", AccountType: "User"}); err != nil {
		t.Fatal(err)
	}
	q, cookie = e.startInstall(e.alice, "")
	e.wantProblem(e.finishInstall(e.alice, q, cookie), http.StatusConflict)
	if got := e.installations(e.alice); len(got) != 0 {
		t.Fatalf("alice sees %+v", got)
	}
}

func TestGitHubInstallationRepositories(t *testing.T) {
	e := newAppEnv(t)
	e.install()
	for i := range 2 {
		if _, err := e.emu.AddRepository(e.inst.ID, githubemu.Repository{Owner: "alice", Name: fmt.Sprintf("more%d", i), Dir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	}
	base := fmt.Sprintf("/v1/github/installations/%d/repositories", e.inst.ID)
	var names []string
	cursor := ""
	for range 5 {
		var page struct {
			Items      []GitHubRepository `json:"items"`
			TotalCount int                `json:"total_count"`
			NextCursor string             `json:"next_cursor"`
		}
		res := e.do("GET", base+"?limit=2&cursor="+cursor, "", bearer(e.alice)...)
		if res.Code != http.StatusOK {
			t.Fatalf("%d %s", res.Code, res.body)
		}
		res.decode(t, &page)
		if page.TotalCount != 3 || len(page.Items) > 2 {
			t.Fatalf("page %+v", page)
		}
		for _, r := range page.Items {
			names = append(names, r.FullName)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if got := strings.Join(names, " "); got != "alice/app alice/more0 alice/more1" {
		t.Fatalf("repositories: %s", got)
	}
	e.wantProblem(e.do("GET", base+"?cursor=bm9wZQ", "", bearer(e.alice)...), http.StatusBadRequest)
	e.wantProblem(e.do("GET", "/v1/github/installations/12345/repositories", "", bearer(e.alice)...), http.StatusNotFound)

	// Suspended, here or only on GitHub so far: refused.
	e.emu.SetSuspended(e.inst.ID, true)
	e.wantProblem(e.do("GET", base, "", bearer(e.alice)...), http.StatusConflict)
	if _, err := e.pool().Exec(t.Context(), `UPDATE github_installations SET suspended_at = now()`); err != nil {
		t.Fatal(err)
	}
	e.emu.SetSuspended(e.inst.ID, false)
	e.wantProblem(e.do("GET", base, "", bearer(e.alice)...), http.StatusConflict)
}

func TestGitHubRepositoryBranches(t *testing.T) {
	e := newAppEnv(t)
	e.install()
	base := fmt.Sprintf("/v1/github/installations/%d/repositories/%d/branches", e.inst.ID, e.repo.ID)
	type branchPage struct {
		Items      []GitHubBranch `json:"items"`
		NextCursor string         `json:"next_cursor"`
	}
	res := e.do("GET", base, "", session(e.alice)...)
	if res.Code != http.StatusOK {
		t.Fatalf("GET branches: %d %s", res.Code, res.body)
	}
	var all branchPage
	res.decode(t, &all)
	if len(all.Items) != 2 || all.Items[0] != (GitHubBranch{Name: "dev", CommitSHA: e.dev}) || all.Items[1] != (GitHubBranch{Name: "main", CommitSHA: e.main}) || all.NextCursor != "" {
		t.Fatalf("branches: %+v", all)
	}
	// GitHub's paging, behind an opaque cursor.
	var first, second branchPage
	e.do("GET", base+"?limit=1", "", bearer(e.alice)...).decode(t, &first)
	if len(first.Items) != 1 || first.Items[0].Name != "dev" || first.NextCursor == "" {
		t.Fatalf("first page: %+v", first)
	}
	e.do("GET", base+"?limit=1&cursor="+first.NextCursor, "", bearer(e.alice)...).decode(t, &second)
	if len(second.Items) != 1 || second.Items[0].Name != "main" || second.NextCursor != "" {
		t.Fatalf("second page: %+v", second)
	}
	e.wantProblem(e.do("GET", base+"?cursor=bm9wZQ", "", bearer(e.alice)...), http.StatusBadRequest)

	// Bob's installation and repository: alice sees neither, bob not hers.
	bobInst, err := e.emu.AddInstallation(githubemu.Installation{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := e.emu.AddRepository(bobInst.ID, githubemu.Repository{Owner: "bob", Name: "secret", Dir: e.repo.Dir})
	if err != nil {
		t.Fatal(err)
	}
	bob := e.signIn(2, "bob")
	if _, err := e.api.Projects.RecordInstallation(t.Context(), bob.ID, uuid.Nil, project.GitHubInstallation{ID: bobInst.ID, AccountLogin: "bob", AccountType: "User"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		who  user
		path string
	}{
		{e.alice, fmt.Sprintf("/v1/github/installations/%d/repositories/%d/branches", e.inst.ID, secret.ID)},  // not her installation's
		{e.alice, fmt.Sprintf("/v1/github/installations/%d/repositories/%d/branches", bobInst.ID, secret.ID)}, // not her installation
		{bob, base},
		{e.alice, fmt.Sprintf("/v1/github/installations/%d/repositories/%d/branches", e.inst.ID, 999999)},
	} {
		res := e.do("GET", tc.path, "", bearer(tc.who)...)
		e.wantProblem(res, http.StatusNotFound)
		if strings.Contains(res.body, "dev") || strings.Contains(res.body, e.main) {
			t.Fatalf("%s leaks a branch: %s", tc.path, res.body)
		}
	}
	e.wantProblem(e.do("GET", fmt.Sprintf("/v1/github/installations/%d/repositories/x/branches", e.inst.ID), "", bearer(e.alice)...), http.StatusUnprocessableEntity)

	// Suspended on GitHub: refused.
	e.emu.SetSuspended(e.inst.ID, true)
	e.wantProblem(e.do("GET", base, "", bearer(e.alice)...), http.StatusConflict)
}

// projectRepo is the repository part of a project, as stored.
type projectRepo struct {
	installation *uuid.UUID
	repoID       *int64
	name         *string
	branch, root string
}

func (e *appEnv) projectRepo(id uuid.UUID) projectRepo {
	e.t.Helper()
	var r projectRepo
	if err := e.pool().QueryRow(context.Background(), `SELECT github_installation_id, github_repository_id, github_repository_full_name, branch, root_directory FROM projects WHERE id = $1`, id).
		Scan(&r.installation, &r.repoID, &r.name, &r.branch, &r.root); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func TestCreateProjectFromRepositoryDeploysTheBranchHead(t *testing.T) {
	e := newAppEnv(t)
	e.install()

	p := e.createProject(e.alice, fmt.Sprintf(`{"name":"App","repository":{"installation_id":%d,"full_name":"alice/app"}}`, e.inst.ID))
	if p.Repository != "alice/app" || p.Branch != "main" || p.RootDirectory != "" {
		t.Fatalf("created %+v", p)
	}
	if r := e.projectRepo(p.ID); r.repoID == nil || *r.repoID != e.repo.ID || r.installation == nil {
		t.Fatalf("stored %+v", r)
	}
	var (
		sha, ref, msg, source string
		created               uuid.UUID
	)
	if err := e.pool().QueryRow(t.Context(), `SELECT github_commit_sha, github_ref, commit_message, source_type, created_by_user_id FROM deployments WHERE project_id = $1`, p.ID).
		Scan(&sha, &ref, &msg, &source, &created); err != nil {
		t.Fatal(err)
	}
	if sha != e.main || ref != "refs/heads/main" || msg != "first page" || source != "github" || created != e.alice.ID {
		t.Fatalf("deployment of %s %s %q from %s by %s", sha, ref, msg, source, created)
	}
	if n := e.count(`SELECT count(*) FROM river_job j JOIN builds b ON j.args->>'build_id' = b.id::text
		JOIN deployments d ON d.id = b.deployment_id WHERE d.project_id = $1 AND j.kind = 'build'`, p.ID); n != 1 {
		t.Fatalf("%d build tasks", n)
	}

	// By id, another branch, a root directory.
	p2 := e.createProject(e.alice, fmt.Sprintf(`{"name":"Dev","repository":{"installation_id":%d,"repository_id":%d,"branch":"dev","root_directory":"/web/"}}`, e.inst.ID, e.repo.ID))
	if p2.Branch != "dev" || p2.RootDirectory != "web" || p2.Repository != "alice/app" {
		t.Fatalf("created %+v", p2)
	}
	if n := e.count(`SELECT count(*) FROM deployments WHERE project_id = $1 AND github_commit_sha = $2`, p2.ID, e.dev); n != 1 {
		t.Fatalf("%d deployments of dev's head", n)
	}
}

func TestDeployACommitShowsItsMessageAndBranch(t *testing.T) {
	e := newAppEnv(t)
	e.install()
	p := e.createProject(e.alice, fmt.Sprintf(`{"name":"App","repository":{"installation_id":%d,"full_name":"alice/app"}}`, e.inst.ID))
	deploy := func(sha string) Deployment {
		t.Helper()
		res := e.do("POST", "/v1/deployments", fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s"}`, p.ID, sha), bearer(e.alice)...)
		if res.Code != http.StatusCreated {
			t.Fatalf("POST /v1/deployments %s: %d %s", sha[:7], res.Code, res.body)
		}
		var d Deployment
		res.decode(t, &d)
		return d
	}
	if d := deploy(e.dev); d.CommitSHA != e.dev || d.CommitMessage != "on dev" || d.Branch != "dev" {
		t.Fatalf("dev's head deployed: %+v", d)
	}
	// main's head is also where dev started: both branches have it in
	// their history, but only main has it as its head.
	if d := deploy(e.main); d.CommitMessage != "first page" || d.Branch != "main" {
		t.Fatalf("main's head deployed: %+v", d)
	}
	// What the list shows, read back from the database.
	var list struct {
		Items []Deployment `json:"items"`
	}
	e.do("GET", "/v1/deployments?project_id="+p.ID.String(), "", bearer(e.alice)...).decode(t, &list)
	if len(list.Items) != 3 || list.Items[0].CommitMessage != "first page" || list.Items[1].Branch != "dev" || list.Items[1].CommitMessage != "on dev" {
		t.Fatalf("listed %+v", list.Items)
	}

	// A commit the repository does not have: refused before anything is written.
	before := e.count(`SELECT count(*) FROM deployments`)
	res := e.do("POST", "/v1/deployments", fmt.Sprintf(`{"project_id":"%s","commit_sha":"%s"}`, p.ID, strings.Repeat("0", 40)), bearer(e.alice)...)
	e.wantProblem(res, http.StatusUnprocessableEntity)
	if n := e.count(`SELECT count(*) FROM deployments`); n != before {
		t.Fatalf("%d deployments after an unknown commit, want %d", n, before)
	}

	// GitHub unavailable (the installation suspended there): the deployment
	// goes ahead with the sha alone.
	e.emu.SetSuspended(e.inst.ID, true)
	if d := deploy(e.dev); d.CommitSHA != e.dev || d.CommitMessage != "" || d.Branch != "" {
		t.Fatalf("deployed while GitHub refuses: %+v", d)
	}
}

func TestCreateProjectFromRepositoryRefusals(t *testing.T) {
	e := newAppEnv(t)
	e.install()
	bobInst, err := e.emu.AddInstallation(githubemu.Installation{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.emu.AddRepository(bobInst.ID, githubemu.Repository{Owner: "bob", Name: "secret", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	bob := e.signIn(2, "bob")
	if _, err := e.api.Projects.RecordInstallation(t.Context(), bob.ID, uuid.Nil, project.GitHubInstallation{ID: bobInst.ID, AccountLogin: "bob", AccountType: "User"}); err != nil {
		t.Fatal(err)
	}
	nothingWritten := func() {
		t.Helper()
		if n := e.count(`SELECT (SELECT count(*) FROM projects) + (SELECT count(*) FROM deployments) + (SELECT count(*) FROM river_job)`); n != 0 {
			t.Fatalf("%d rows written", n)
		}
	}
	create := func(repo string) response {
		return e.do("POST", "/v1/projects", `{"name":"App","repository":`+repo+`}`, bearer(e.alice)...)
	}
	mine := e.inst.ID
	for _, tc := range []struct {
		repo   string
		status int
	}{
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"bob/secret"}`, mine), http.StatusUnprocessableEntity}, // not visible
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/nope"}`, mine), http.StatusUnprocessableEntity}, // no such repository
		{fmt.Sprintf(`{"installation_id":%d,"repository_id":%d}`, mine, e.repo.ID+999), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"bob/secret"}`, bobInst.ID), http.StatusUnprocessableEntity}, // bob's installation
		{`{"installation_id":999999,"full_name":"alice/app"}`, http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","branch":"nope"}`, mine), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","branch":"-x"}`, mine), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","root_directory":"../up"}`, mine), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","repository_id":%d}`, mine, e.repo.ID), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d}`, mine), http.StatusUnprocessableEntity},
		{fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","extra":1}`, mine), http.StatusUnprocessableEntity},
	} {
		if res := create(tc.repo); res.Code != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.repo, res.Code, tc.status, res.body)
		}
	}
	nothingWritten()

	// A taken slug fails after GitHub was asked: still nothing written.
	e.createProject(e.alice, `{"name":"App"}`)
	e.wantProblem(create(fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app"}`, mine)), http.StatusConflict)
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("%d deployments", n)
	}
	if _, err := e.pool().Exec(t.Context(), `DELETE FROM projects`); err != nil {
		t.Fatal(err)
	}

	// Suspended on GitHub (not yet known here), then here.
	e.emu.SetSuspended(e.inst.ID, true)
	e.wantProblem(create(fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app"}`, mine)), http.StatusConflict)
	e.emu.SetSuspended(e.inst.ID, false)
	if _, err := e.pool().Exec(t.Context(), `UPDATE github_installations SET suspended_at = now()`); err != nil {
		t.Fatal(err)
	}
	e.wantProblem(create(fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app"}`, mine)), http.StatusConflict)
	nothingWritten()
}

func TestConnectAndDisconnectRepository(t *testing.T) {
	e := newAppEnv(t)
	e.install()
	p := e.createProject(e.alice, `{"name":"Later"}`)
	path := "/v1/projects/" + p.ID.String() + "/repository"

	res := e.do("PUT", path, fmt.Sprintf(`{"installation_id":%d,"full_name":"alice/app","branch":"dev","root_directory":"site"}`, e.inst.ID), bearer(e.alice)...)
	var got Project
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.Repository != "alice/app" || got.Branch != "dev" || got.RootDirectory != "site" {
		t.Fatalf("PUT: %d %s", res.Code, res.body)
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("connecting deployed: %d deployments", n)
	}

	// A repository the installation cannot see changes nothing.
	e.wantProblem(e.do("PUT", path, fmt.Sprintf(`{"installation_id":%d,"full_name":"bob/secret"}`, e.inst.ID), bearer(e.alice)...), http.StatusUnprocessableEntity)
	if r := e.projectRepo(p.ID); r.name == nil || *r.name != "alice/app" || r.branch != "dev" {
		t.Fatalf("after a refused change: %+v", r)
	}

	res = e.do("DELETE", path, "", bearer(e.alice)...)
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.Repository != "" {
		t.Fatalf("DELETE: %d %s", res.Code, res.body)
	}
	if r := e.projectRepo(p.ID); r.installation != nil || r.repoID != nil || r.name != nil {
		t.Fatalf("after disconnecting: %+v", r)
	}
	e.wantProblem(e.do("DELETE", "/v1/projects/"+uuid.NewString()+"/repository", "", bearer(e.alice)...), http.StatusNotFound)
}

func TestGitHubInstallationsArePaged(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.signIn(1, "alice"), e.signIn(2, "bob")
	for i := range 5 {
		if _, err := e.api.Projects.RecordInstallation(t.Context(), alice.ID, uuid.Nil, project.GitHubInstallation{ID: int64(100 + i), AccountLogin: fmt.Sprintf("acct%d", i), AccountType: "Organization"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.api.Projects.RecordInstallation(t.Context(), bob.ID, uuid.Nil, project.GitHubInstallation{ID: 200, AccountLogin: "bob", AccountType: "User"}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	cursor := ""
	for range 10 {
		var page struct {
			Items      []Installation `json:"items"`
			NextCursor string         `json:"next_cursor"`
		}
		res := e.do("GET", "/v1/github/installations?limit=2&cursor="+cursor, "", bearer(alice)...)
		if res.Code != http.StatusOK {
			t.Fatalf("%d %s", res.Code, res.body)
		}
		res.decode(t, &page)
		for _, in := range page.Items {
			ids = append(ids, in.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if fmt.Sprint(ids) != "[100 101 102 103 104]" {
		t.Fatalf("alice's installations: %v", ids)
	}
}
