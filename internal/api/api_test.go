package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// env is an API on its own database.
type env struct {
	t       *testing.T
	api     *API
	handler http.Handler
	routes  *routes
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith registers extra operations too.
func newEnvWith(t *testing.T, extra func(huma.API)) *env {
	t.Helper()
	pool := testdb.New(t)
	// GitHub is configured so that its routes are documented and checked;
	// nothing here reaches it (sign-in is tested against the emulator).
	a := &API{Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool}, Deploys: testDeploys(t, pool), Log: zlog.Discard(), extra: extra,
		Variables: project.Variables{DB: pool, Keys: testKeys},
		GitHub:    &GitHubSignIn{ClientID: "Iv1.test", ClientSecret: "x", WebURL: "http://127.0.0.1:9", APIURL: "http://127.0.0.1:9"},
		App:       testGitHubApp(t, "http://127.0.0.1:9")}
	h, r := a.build()
	return &env{t: t, api: a, handler: h, routes: r}
}

// failing are operations that fail the ways a handler can, to prove no
// cause reaches the client.
func failing(api huma.API) {
	huma.Register(api, huma.Operation{OperationID: "test-fail", Method: http.MethodGet, Path: "/v1/test/fail"},
		func(context.Context, *struct{}) (*struct{}, error) {
			return nil, errors.New("database password is hunter2")
		})
	huma.Register(api, huma.Operation{OperationID: "test-fail-500", Method: http.MethodGet, Path: "/v1/test/fail500"},
		func(context.Context, *struct{}) (*struct{}, error) {
			return nil, huma.Error500InternalServerError("boom", errors.New("database password is hunter2"))
		})
	huma.Register(api, huma.Operation{OperationID: "test-panic", Method: http.MethodGet, Path: "/v1/test/panic"},
		func(context.Context, *struct{}) (*struct{}, error) {
			panic("database password is hunter2")
		})
}

// user is a signed-in user: their session cookie, and a token.
type user struct {
	account.User
	cookie string
	token  string
}

func (e *env) signIn(n int64, login string) user {
	e.t.Helper()
	u, s, err := e.api.Accounts.SignIn(context.Background(), account.Profile{GitHubUserID: n, Login: login, Email: login + "@example.com"})
	if err != nil {
		e.t.Fatal(err)
	}
	// Fixtures are admitted users; the waitlist tests make their own.
	if !u.Admitted {
		if err := e.api.Accounts.Admit(context.Background(), u.ID); err != nil {
			e.t.Fatal(err)
		}
		u.Admitted = true
	}
	tok, err := e.api.Accounts.CreateToken(context.Background(), u.ID, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return user{User: u, cookie: s.Token, token: tok.Secret}
}

type response struct {
	*httptest.ResponseRecorder
	body string
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// do sends a request; header pairs follow the body.
func (e *env) do(method, path, body string, header ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return response{rec, rec.Body.String()}
}

func bearer(u user) []string  { return []string{"Authorization", "Bearer " + u.token} }
func session(u user) []string { return []string{"Cookie", SessionCookie + "=" + u.cookie} }

// document is the part of the OpenAPI document the tests read.
type document struct {
	OpenAPI string `json:"openapi"`
	Paths   map[string]map[string]struct {
		Security []map[string][]string `json:"security"`
	} `json:"paths"`
}

func (e *env) document() document {
	e.t.Helper()
	res := e.do("GET", OpenAPIPath, "")
	if res.Code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", OpenAPIPath, res.Code, res.body)
	}
	var d document
	res.decode(e.t, &d)
	return d
}

// operation is one documented method and path.
type operation struct{ method, path string }

func (d document) operations() []operation {
	var ops []operation
	for path, methods := range d.Paths {
		for m := range methods {
			ops = append(ops, operation{strings.ToUpper(m), path})
		}
	}
	slices.SortFunc(ops, func(a, b operation) int { return strings.Compare(a.path+a.method, b.path+b.method) })
	return ops
}

var param = regexp.MustCompile(`\{[^}]+\}`)

// TestOpenAPIDocumentsEveryRoute: every documented operation is served
// (the mux has a route for it) and every route of the mux is documented,
// save the document itself.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	e := newEnvWith(t, failing) // extra operations are checked too
	d := e.document()
	if !strings.HasPrefix(d.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1", d.OpenAPI)
	}
	ops := d.operations()
	if len(ops) < 9 {
		t.Fatalf("only %d operations documented: %v", len(ops), ops)
	}
	for _, op := range ops {
		path := param.ReplaceAllString(op.path, uuid.NewString())
		req := httptest.NewRequest(op.method, path, nil)
		if _, pattern := e.routes.Handler(req); pattern == "" {
			t.Errorf("%s %s is documented but not routed", op.method, op.path)
		}
		if res := e.do(op.method, path, ""); strings.Contains(res.body, "no route for") || res.Code == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %s", op.method, path, res.Code, res.body)
		}
	}
	for _, pattern := range e.routes.patterns {
		method, path, _ := strings.Cut(pattern, " ")
		if pattern == "GET "+OpenAPIPath {
			continue
		}
		if !slices.Contains(ops, operation{method, path}) {
			t.Errorf("route %q is not documented", pattern)
		}
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	res := e.do("GET", "/v1/health", "")
	var body struct{ Status string }
	res.decode(t, &body)
	if res.Code != http.StatusOK || body.Status != "ok" {
		t.Fatalf("%d %s", res.Code, res.body)
	}
}

// problemBody is RFC 9457's shape as huma writes it.
type problemBody struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func (e *env) wantProblem(res response, status int) problemBody {
	e.t.Helper()
	if res.Code != status {
		e.t.Fatalf("status %d, want %d: %s", res.Code, status, res.body)
	}
	if ct := res.Header().Get("Content-Type"); ct != "application/problem+json" {
		e.t.Fatalf("content type %q: %s", ct, res.body)
	}
	var p problemBody
	res.decode(e.t, &p)
	if p.Status != status || p.Title == "" {
		e.t.Fatalf("problem %+v", p)
	}
	return p
}

func TestErrorsAreProblemsWithRequestIDs(t *testing.T) {
	e := newEnvWith(t, failing)
	u := e.signIn(1, "alice")

	e.wantProblem(e.do("GET", "/v1/nope", ""), http.StatusNotFound)
	res := e.do("PUT", "/v1/health", "")
	e.wantProblem(res, http.StatusMethodNotAllowed)
	if allow := res.Header().Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("Allow %q", allow)
	}

	// Request ids: the client's when sane, a new one otherwise, on every
	// response (errors too).
	if got := e.do("GET", "/v1/health", "", "X-Request-Id", "trace-42").Header().Get("X-Request-Id"); got != "trace-42" {
		t.Errorf("kept id %q", got)
	}
	for _, bad := range []string{"", "with space", strings.Repeat("x", 65)} {
		if got := e.do("GET", "/v1/nope", "", "X-Request-Id", bad).Header().Get("X-Request-Id"); got == "" || got == bad {
			t.Errorf("id for %q: %q", bad, got)
		}
	}

	// Bodies: unknown fields, malformed JSON, too large.
	res = e.do("POST", "/v1/projects", `{"name":"a","colour":"red"}`, bearer(u)...)
	if e.wantProblem(res, http.StatusUnprocessableEntity); !strings.Contains(res.body, "body.colour") {
		t.Errorf("unknown field not named: %s", res.body)
	}
	e.wantProblem(e.do("POST", "/v1/projects", `{"name":`, bearer(u)...), http.StatusBadRequest)
	e.wantProblem(e.do("POST", "/v1/tokens", `{"name":"`+strings.Repeat("x", 1<<20)+`"}`, bearer(u)...), http.StatusRequestEntityTooLarge)

	// 5xx: no cause in the body, whichever way the handler failed.
	for _, path := range []string{"/v1/test/fail", "/v1/test/fail500", "/v1/test/panic"} {
		res := e.do("GET", path, "", "X-Request-Id", "r1")
		e.wantProblem(res, http.StatusInternalServerError)
		if strings.Contains(res.body, "hunter2") || res.Header().Get("X-Request-Id") != "r1" {
			t.Errorf("%s: %s", path, res.body)
		}
	}
}

// A database that is away is a 503 that does not say why.
func TestDatabaseDownIsAnOpaque503(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	e.api.Accounts.DB.(*pgxpool.Pool).Close()
	res := e.do("GET", "/v1/me", "", bearer(alice)...)
	if e.wantProblem(res, http.StatusServiceUnavailable); strings.Contains(res.body, "closed") {
		t.Fatalf("cause in body: %s", res.body)
	}
}

func TestSessionsAndTokens(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")

	var me User
	for _, cred := range [][]string{session(alice), bearer(alice)} {
		res := e.do("GET", "/v1/me", "", cred...)
		if res.Code != http.StatusOK {
			t.Fatalf("GET /v1/me: %d %s", res.Code, res.body)
		}
		res.decode(t, &me)
		if me.ID != alice.ID || me.Username != "alice" || !me.Admin {
			t.Fatalf("me = %+v", me)
		}
	}

	// A token is shown once, at creation.
	res := e.do("POST", "/v1/tokens", `{"name":"ci"}`, session(alice)...)
	var created struct {
		ID    uuid.UUID `json:"id"`
		Name  string    `json:"name"`
		Token string    `json:"token"`
	}
	res.decode(t, &created)
	if res.Code != http.StatusCreated || created.Name != "ci" || !strings.HasPrefix(created.Token, "zw_") {
		t.Fatalf("POST /v1/tokens: %d %s", res.Code, res.body)
	}
	if res := e.do("GET", "/v1/me", "", "Authorization", "Bearer "+created.Token); res.Code != http.StatusOK {
		t.Fatalf("new token: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("POST", "/v1/tokens", `{"name":""}`, session(alice)...), http.StatusUnprocessableEntity)

	// Listed without secrets, a page at a time.
	for range 3 {
		e.do("POST", "/v1/tokens", `{"name":"more"}`, session(alice)...)
	}
	var ids []uuid.UUID
	cursor := ""
	for pages := 0; ; pages++ {
		res := e.do("GET", "/v1/tokens?limit=2&cursor="+cursor, "", bearer(alice)...)
		if res.Code != http.StatusOK || strings.Contains(res.body, "zw_") || strings.Contains(res.body, `"token"`) {
			t.Fatalf("GET /v1/tokens: %d %s", res.Code, res.body)
		}
		var page struct {
			Items      []Token `json:"items"`
			NextCursor string  `json:"next_cursor"`
		}
		res.decode(t, &page)
		for _, tok := range page.Items {
			ids = append(ids, tok.ID)
		}
		if cursor = page.NextCursor; cursor == "" || pages > 5 {
			break
		}
	}
	if len(ids) != 5 || !slices.IsSortedFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) }) || !slices.Contains(ids, created.ID) {
		t.Fatalf("listed %v", ids)
	}
	e.wantProblem(e.do("GET", "/v1/tokens?cursor=!!", "", bearer(alice)...), http.StatusBadRequest)
	e.wantProblem(e.do("GET", "/v1/tokens?limit=1000", "", bearer(alice)...), http.StatusUnprocessableEntity)

	// Revoked: the token stops working at once.
	if res := e.do("DELETE", "/v1/tokens/"+created.ID.String(), "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("DELETE token: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("GET", "/v1/me", "", "Authorization", "Bearer "+created.Token), http.StatusUnauthorized)
	e.wantProblem(e.do("DELETE", "/v1/tokens/"+created.ID.String(), "", session(alice)...), http.StatusNotFound)

	// Signing out needs a session, and ends it.
	e.wantProblem(e.do("DELETE", "/v1/sessions/current", "", bearer(alice)...), http.StatusBadRequest)
	res = e.do("DELETE", "/v1/sessions/current", "", session(alice)...)
	if res.Code != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", res.Code, res.body)
	}
	c := res.Result().Cookies()
	if len(c) != 1 || c[0].Name != SessionCookie || c[0].MaxAge >= 0 || !c[0].HttpOnly || !c[0].Secure || c[0].SameSite != http.SameSiteLaxMode {
		t.Fatalf("sign-out cookie %+v", c)
	}
	e.wantProblem(e.do("GET", "/v1/me", "", session(alice)...), http.StatusUnauthorized)
	// The token still works: signing out ends the browser's session only.
	if res := e.do("GET", "/v1/me", "", bearer(alice)...); res.Code != http.StatusOK {
		t.Fatalf("token after sign-out: %d", res.Code)
	}
}

func TestSessionsAreListedAndRevokedByTheirOwner(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	phone := e.signIn(1, "alice") // alice again, in another browser
	bob := e.signIn(2, "bob")

	type sessionList struct {
		Items      []Session `json:"items"`
		NextCursor string    `json:"next_cursor"`
	}
	list := func(cred []string) sessionList {
		t.Helper()
		res := e.do("GET", "/v1/sessions", "", cred...)
		if res.Code != http.StatusOK {
			t.Fatalf("GET /v1/sessions: %d %s", res.Code, res.body)
		}
		if strings.Contains(res.body, alice.cookie) || strings.Contains(res.body, phone.cookie) {
			t.Fatalf("a session's cookie is listed: %s", res.body)
		}
		var l sessionList
		res.decode(t, &l)
		return l
	}
	l := list(session(alice))
	if len(l.Items) != 2 || !l.Items[0].Current || l.Items[1].Current || l.Items[0].CreatedAt.IsZero() || !l.Items[0].ExpiresAt.After(time.Now()) {
		t.Fatalf("alice's sessions from her laptop: %+v", l.Items)
	}
	laptopID, phoneID := l.Items[0].ID, l.Items[1].ID
	// Through a token, no session is current.
	if l := list(bearer(alice)); len(l.Items) != 2 || l.Items[0].Current || l.Items[1].Current {
		t.Fatalf("alice's sessions through a token: %+v", l.Items)
	}
	if l := list(session(bob)); len(l.Items) != 1 || l.Items[0].ID == laptopID || l.Items[0].ID == phoneID {
		t.Fatalf("bob's sessions: %+v", l.Items)
	}

	// Bob cannot end alice's session: a 404, like one that never was.
	e.wantProblem(e.do("DELETE", "/v1/sessions/"+phoneID.String(), "", session(bob)...), http.StatusNotFound)
	e.wantProblem(e.do("DELETE", "/v1/sessions/not-a-uuid", "", session(alice)...), http.StatusNotFound)
	if res := e.do("GET", "/v1/me", "", session(phone)...); res.Code != http.StatusOK {
		t.Fatalf("alice's phone after bob's attempt: %d", res.Code)
	}

	// Alice signs her phone out from her laptop.
	if res := e.do("DELETE", "/v1/sessions/"+phoneID.String(), "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/sessions/{phone}: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("GET", "/v1/me", "", session(phone)...), http.StatusUnauthorized)
	e.wantProblem(e.do("DELETE", "/v1/sessions/"+phoneID.String(), "", session(alice)...), http.StatusNotFound)
	if l := list(session(alice)); len(l.Items) != 1 || l.Items[0].ID != laptopID {
		t.Fatalf("after revoking the phone: %+v", l.Items)
	}
	// DELETE /v1/sessions/current still means the caller's own session.
	if res := e.do("DELETE", "/v1/sessions/current", "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("GET", "/v1/me", "", session(alice)...), http.StatusUnauthorized)
	e.wantProblem(e.do("GET", "/v1/sessions", ""), http.StatusUnauthorized)
}

func TestSessionCookieIsSecureOutsideDev(t *testing.T) {
	for _, dev := range []bool{false, true} {
		c := (&API{Dev: dev}).sessionCookie("v", time.Now().Add(time.Hour))
		if c.Secure == dev || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" {
			t.Errorf("dev=%v: %+v", dev, c)
		}
	}
}

func TestCrossSiteRequestsCannotUseTheCookie(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	e.wantProblem(e.do("POST", "/v1/tokens", `{"name":"x"}`, append(session(alice), "Sec-Fetch-Site", "cross-site")...), http.StatusForbidden)
	if res := e.do("POST", "/v1/tokens", `{"name":"x"}`, append(session(alice), "Sec-Fetch-Site", "same-origin")...); res.Code != http.StatusCreated {
		t.Fatalf("same-origin: %d %s", res.Code, res.body)
	}
}
