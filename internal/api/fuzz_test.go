package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// The fuzzers send whatever they make up through the whole handler (the
// request id middleware, authentication, huma's decoding and validation,
// the handler, the database) and hold every answer to the API's promises:
//
//   - never a 5xx (a panic is one: the middleware turns it into a 500);
//   - every error is application/problem+json whose status is the 4xx sent;
//   - a 4xx writes nothing: every table reads the same before and after;
//   - every answer carries X-Request-Id.
//
// `go test` runs the seeds; `go test -fuzz FuzzCreateProject -fuzztime 60s`
// searches further. Placeholders in the inputs ({project}, {deployment},
// {other}) become the fixture's ids, so that seeds reach past the
// "no such project" refusals into the handlers' own checks.

// fuzzEnv is one API on one database, shared by every input of a fuzzer:
// a signed-in user with a token, an unconnected project, a project
// connected to a GitHub repository, and deployments to roll back to and to
// cancel.
type fuzzEnv struct {
	h         http.Handler
	pool      *pgxpool.Pool
	token     string
	project   uuid.UUID // connected to octo/app
	other     uuid.UUID // an upload-only project
	retiring  uuid.UUID // a built deployment of project, retiring: rollback target
	queued    uuid.UUID // a deployment of project whose build is queued: cancel target
	snapshots string    // the query that reads every table's contents
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	ctx := context.Background()
	pool := testdb.New(f)
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		f.Fatal(err)
	}
	a := &API{Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool}, Log: zlog.Discard(),
		Deploys:   Deploys{DB: pool, Queue: q, AppsDomain: testAppsDomain},
		Variables: project.Variables{DB: pool, Keys: testKeys}}
	e := &fuzzEnv{h: a.Handler(), pool: pool}

	u, _, err := a.Accounts.SignIn(ctx, account.Profile{GitHubUserID: 1, Login: "alice", Email: "alice@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	tok, err := a.Accounts.CreateToken(ctx, u.ID, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	e.token = tok.Secret
	var org uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT organisation_id FROM organisation_members WHERE user_id = $1`, u.ID).Scan(&org); err != nil {
		f.Fatal(err)
	}
	inst, img := id.New(), id.New()
	e.project, e.other, e.retiring, e.queued = id.New(), id.New(), id.New(), id.New()
	for _, s := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
		  VALUES ($1, 77, $2, 'octo', 'User')`, []any{inst, org}},
		{`INSERT INTO projects (id, organisation_id, slug, name, github_installation_id, github_repository_id, github_repository_full_name, branch)
		  VALUES ($1, $2, 'app', 'App', $3, 88, 'octo/app', 'main')`, []any{e.project, org, inst}},
		{`INSERT INTO projects (id, organisation_id, slug, name) VALUES ($1, $2, 'other', 'Other')`, []any{e.other, org}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, []any{img, e.project}},
	} {
		if _, err := pool.Exec(ctx, s.sql, s.args...); err != nil {
			f.Fatal(err)
		}
	}
	// The deployments are made through the API, as a user makes them, then
	// moved to the status each target needs.
	for _, d := range []*uuid.UUID{&e.retiring, &e.queued} {
		res := e.do(http.MethodPost, "/v1/deployments", "application/json", fmt.Sprintf(`{"project_id":%q,"archive_key":"uploads/%s/src.tar.gz"}`, e.project, e.project), true)
		var out Deployment
		if err := json.Unmarshal(res.Body.Bytes(), &out); res.Code != http.StatusCreated || err != nil {
			f.Fatalf("create deployment: %d %s", res.Code, res.Body)
		}
		*d = out.ID
	}
	if _, err := pool.Exec(ctx, `UPDATE deployments SET status = 'retiring', image_id = $1, stop_at = now() + interval '1 hour' WHERE id = $2`, img, e.retiring); err != nil {
		f.Fatal(err)
	}

	// Every table but the two whose rows authentication touches on each
	// request (last_used_at), which are counted instead.
	rows, err := pool.Query(ctx, `SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		f.Fatal(err)
	}
	var parts []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			f.Fatal(err)
		}
		read := fmt.Sprintf(`(SELECT '%[1]s:' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM %[1]s t)`, t)
		if strings.HasSuffix(t, ".api_tokens") || strings.HasSuffix(t, ".sessions") {
			read = fmt.Sprintf(`(SELECT '%[1]s:' || count(*) FROM %[1]s)`, t)
		}
		parts = append(parts, read)
	}
	if err := rows.Err(); err != nil {
		f.Fatal(err)
	}
	e.snapshots = `SELECT ARRAY[` + strings.Join(parts, ", ") + `]`
	return e
}

// expand fills in the fixture's ids.
func (e *fuzzEnv) expand(s string) string {
	return strings.NewReplacer("{project}", e.project.String(), "{other}", e.other.String(),
		"{retiring}", e.retiring.String(), "{queued}", e.queued.String()).Replace(s)
}

func (e *fuzzEnv) snapshot(t testing.TB) []string {
	t.Helper()
	var s []string
	if err := e.pool.QueryRow(context.Background(), e.snapshots).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *fuzzEnv) do(method, target, contentType, body string, auth bool) *httptest.ResponseRecorder {
	// target's parts are escaped by the caller, so it always parses.
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	if auth {
		r.Header.Set("Authorization", "Bearer "+e.token)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// check sends one request and holds the answer to the promises above.
func (e *fuzzEnv) check(t *testing.T, method, target, contentType, body string, auth bool) *httptest.ResponseRecorder {
	t.Helper()
	before := e.snapshot(t)
	w := e.do(method, target, contentType, body, auth)
	what := fmt.Sprintf("%s %s %q (%s)", method, target, body, contentType)
	if w.Header().Get("X-Request-Id") == "" {
		t.Errorf("%s: no X-Request-Id", what)
	}
	if w.Code >= 500 {
		t.Fatalf("%s: %d %s", what, w.Code, w.Body)
	}
	if w.Code < 400 {
		return w
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: %d with content type %q: %s", what, w.Code, ct, w.Body)
	}
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != w.Code || p.Title == "" {
		t.Fatalf("%s: %d, problem %s (%v)", what, w.Code, w.Body, err)
	}
	if after := e.snapshot(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		for i := range before {
			if before[i] != after[i] {
				t.Errorf("%s: %d changed %s", what, w.Code, strings.SplitN(after[i], ":", 2)[0])
			}
		}
		t.FailNow()
	}
	return w
}

// jsonSeeds are bodies every decoder gets besides its own.
var jsonSeeds = []string{
	``, `null`, `[]`, `{}`, `{"`, `{"a":1}`, `"x"`, `1e999`, `{"name":null}`,
	`{"name":"\u0000"}`, `{"name":"\ud800"}`, "{\"name\":\"\xff\"}", `{"name":1}`, `{"name":"a","name":"b"}`,
}

func addSeeds(f *testing.F, own ...string) {
	for _, s := range append(own, jsonSeeds...) {
		f.Add("application/json", s)
	}
	f.Add("", `{"name":"x"}`)
	f.Add("text/plain", `{"name":"x"}`)
	f.Add("application/json; charset=latin1", `{"name":"x"}`)
	f.Add("application/cbor", "\xa1dnameax")
}

func FuzzCreateProject(f *testing.F) {
	e := newFuzzEnv(f)
	addSeeds(f, `{"name":"My App"}`, `{"name":"My App","slug":"my-app"}`, `{"name":"a","slug":"0190b3a4-0000-7000-8000-000000000000"}`,
		`{"name":"a","slug":"-x-"}`, `{"name":"a","slug":"UPPER"}`, `{"name":"`+strings.Repeat("n", 101)+`"}`,
		`{"name":"a","organisation_id":"{project}"}`, `{"name":"a","organisation_id":"nope"}`, `{"name":"\u0000"}`,
		`{"name":"a","slug":"a\u0000b"}`, `{"name":"a\u0000b"}`, `{"name":"a\u001bb"}`, `{"name":"日本語"}`, `{"name":"---"}`, `{"name":"a","colour":"red"}`)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		e.check(t, http.MethodPost, "/v1/projects", contentType, e.expand(body), true)
	})
}

func FuzzCreateToken(f *testing.F) {
	e := newFuzzEnv(f)
	addSeeds(f, `{"name":"laptop"}`, `{"name":""}`, `{"name":"`+strings.Repeat("t", 101)+`"}`, `{"name":"a\u0000b"}`, `{"name":"\t"}`)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		e.check(t, http.MethodPost, "/v1/tokens", contentType, e.expand(body), true)
	})
}

func FuzzSetEnv(f *testing.F) {
	e := newFuzzEnv(f)
	for _, s := range []struct{ name, body string }{
		{"DATABASE_URL", `{"value":"postgres://db"}`}, {"PORT", `{"value":"1"}`}, {"1BAD", `{"value":"x"}`},
		{"A", `{"value":"\u0000"}`}, {"A", `{"value":1}`}, {"A", `{}`}, {"A", `{"value":"` + strings.Repeat("v", 64<<10+1) + `"}`},
		{strings.Repeat("N", 256), `{"value":"x"}`}, {"a-b", `{"value":"x"}`}, {"A\x00B", `{"value":"x"}`}, {"", `{"value":"x"}`},
		{"É", `{"value":"x"}`}, {"A/B", `{"value":"x"}`}, {"..", `{"value":"x"}`},
	} {
		f.Add("{project}", s.name, s.body)
	}
	f.Add("{other}", "A", `{"value":"x"}`)
	f.Add("nope", "A", `{"value":"x"}`)
	f.Add(uuid.Nil.String(), "A", `{"value":"x"}`)
	f.Fuzz(func(t *testing.T, project, name, body string) {
		e.check(t, http.MethodPut, "/v1/projects/"+url.PathEscape(e.expand(project))+"/env/"+url.PathEscape(name), "application/json", body, true)
	})
}

func FuzzCreateDeployment(f *testing.F) {
	e := newFuzzEnv(f)
	addSeeds(f,
		`{"project_id":"{project}","commit_sha":"`+strings.Repeat("a", 40)+`"}`,
		`{"project_id":"{project}","commit_sha":"`+strings.Repeat("A", 40)+`"}`,
		`{"project_id":"{project}","commit_sha":"abc"}`,
		`{"project_id":"{other}","commit_sha":"`+strings.Repeat("b", 40)+`"}`,
		`{"project_id":"{project}","archive_key":"uploads/{project}/a.tar.gz"}`,
		`{"project_id":"{project}","archive_key":"uploads/{other}/a.tar.gz"}`,
		`{"project_id":"{project}","archive_key":"uploads/{project}/"}`,
		`{"project_id":"{project}","archive_key":"uploads/{project}/../x"}`,
		`{"project_id":"{project}","archive_key":"uploads/{project}/a\u0000b"}`,
		`{"project_id":"{project}","archive_key":"uploads/{project}/a","commit_sha":"`+strings.Repeat("c", 40)+`"}`,
		`{"project_id":"{project}"}`, `{"project_id":"nope"}`, `{"project_id":"00000000-0000-0000-0000-000000000000","archive_key":"k"}`,
	)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		e.check(t, http.MethodPost, "/v1/deployments", contentType, e.expand(body), true)
	})
}

func FuzzJoinWaitlist(f *testing.F) {
	e := newFuzzEnv(f)
	addSeeds(f, `{"email":"new@example.com"}`, `{"email":"New@Example.COM"}`, `{"email":"nope"}`, `{"email":"a@b@c"}`,
		`{"email":"Eve <eve@example.com>"}`, `{"email":"a\u0000@example.com"}`, `{"email":"`+strings.Repeat("a", 250)+`@example.com"}`,
		`{"email":"\"a b\"@example.com"}`, `{"email":"a@[127.0.0.1]"}`, `{"email":"ü@example.com"}`)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		e.check(t, http.MethodPost, "/v1/waitlist", contentType, body, false)
	})
}

func FuzzSetDeploymentStatus(f *testing.F) {
	e := newFuzzEnv(f)
	for _, d := range []string{"{retiring}", "{queued}"} {
		for _, body := range []string{`{"status":"active"}`, `{"status":"cancelled"}`, `{"status":"failed"}`, `{"status":""}`,
			`{"status":"ACTIVE"}`, `{"status":"active\u0000"}`, `{"status":1}`, `{}`, `{"status":"active","reason":"x"}`} {
			f.Add(d, body)
		}
	}
	f.Add("nope", `{"status":"active"}`)
	f.Add(uuid.Nil.String(), `{"status":"cancelled"}`)
	f.Fuzz(func(t *testing.T, deployment, body string) {
		e.check(t, http.MethodPut, "/v1/deployments/"+url.PathEscape(e.expand(deployment))+"/status", "application/json", body, true)
	})
}
