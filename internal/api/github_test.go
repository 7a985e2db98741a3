package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// signInEnv is the API on a real listener with sign-in pointed at a
// GitHub emulator whose App's callback is the API's.
type signInEnv struct {
	*env
	emu    *githubemu.Emulator
	url    string // the API's base URL
	github string // the emulator's
}

func newSignInEnv(t *testing.T) *signInEnv {
	t.Helper()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	emu := githubemu.New(githubemu.App{ID: 1, Slug: "zeitwork", ClientID: "Iv1.test", ClientSecret: "shh", CallbackURL: srv.URL + "/v1/auth/github/callback"})
	gh, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	pool := testdb.New(t)
	a := &API{
		Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool}, Log: zlog.Discard(), Dev: true, // http://127.0.0.1
		GitHub: &GitHubSignIn{ClientID: "Iv1.test", ClientSecret: "shh", WebURL: gh.APIURL, APIURL: gh.APIURL},
	}
	handler, routes := a.build()
	h = handler
	return &signInEnv{env: &env{t: t, api: a, handler: handler, routes: routes}, emu: emu, url: srv.URL, github: gh.APIURL}
}

// browser is a client with a cookie jar that follows redirects, as a
// browser does; it records where it went.
type browser struct {
	*http.Client
	visited []string
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{}
	b.Client = &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		b.visited = append(b.visited, r.URL.String())
		return nil
	}}
	return b
}

// get fetches url and returns the last response's status, URL and body.
func (b *browser) get(t *testing.T, u string) (int, *url.URL, string) {
	t.Helper()
	res, err := b.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return res.StatusCode, res.Request.URL, sb.String()
}

func (s *signInEnv) users() int {
	s.t.Helper()
	var n int
	if err := s.api.Accounts.DB.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *signInEnv) me(b *browser) (int, User) {
	s.t.Helper()
	res, err := b.Get(s.url + "/v1/me")
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	var u User
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(&u); err != nil {
			s.t.Fatal(err)
		}
	}
	return res.StatusCode, u
}

func TestGitHubSignInBrowserFlow(t *testing.T) {
	s := newSignInEnv(t)
	s.emu.AddUser(githubemu.User{ID: 42, Login: "alice", Name: "Alice", Emails: []githubemu.Email{
		{Email: "alice@old.example", Verified: true},
		{Email: "alice@example.com", Primary: true, Verified: true},
	}})
	s.emu.ApproveAs("alice")

	b := newBrowser(t)
	status, landed, body := b.get(t, s.url+"/v1/auth/github?next=/projects%3Fsort%3Dname")
	if landed.String() != s.url+"/projects?sort=name" || status != http.StatusNotFound {
		t.Fatalf("landed on %s (%d %s) via %v", landed, status, body, b.visited)
	}
	if len(b.visited) != 3 || !strings.HasPrefix(b.visited[0], s.github+"/login/oauth/authorize?") {
		t.Fatalf("visited %v", b.visited)
	}
	status, me := s.me(b)
	if status != http.StatusOK || me.Username != "alice" || me.Name != "Alice" || me.Email != "alice@example.com" || !me.Admin {
		t.Fatalf("GET /v1/me: %d %+v", status, me)
	}
	// The session keeps the browser's User-Agent, and when it was last seen.
	status, _, body = b.get(t, s.url+"/v1/sessions")
	var sessions struct {
		Items []Session `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &sessions); err != nil || status != http.StatusOK || len(sessions.Items) != 1 {
		t.Fatalf("GET /v1/sessions: %d %s", status, body)
	}
	if got := sessions.Items[0]; got.UserAgent != "Go-http-client/1.1" || got.LastSeenAt == nil || !got.Current {
		t.Fatalf("the session: %+v", got)
	}
	// The session cookie is HttpOnly and Lax; the state cookie is gone.
	u, _ := url.Parse(s.url + "/v1/auth/github/callback")
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == stateCookie {
			t.Errorf("state cookie kept: %+v", c)
		}
	}

	// Signing in again updates the user instead of adding one; the
	// default landing is /.
	s.emu.AddUser(githubemu.User{ID: 42, Login: "alice2", Name: "Alice B", Emails: []githubemu.Email{{Email: "alice@new.example", Primary: true, Verified: true}}})
	s.emu.ApproveAs("alice2")
	b2 := newBrowser(t)
	if _, landed, _ := b2.get(t, s.url+"/v1/auth/github"); landed.Path != "/" {
		t.Fatalf("landed on %s", landed)
	}
	status, me2 := s.me(b2)
	if status != http.StatusOK || me2.ID != me.ID || me2.Username != "alice2" || me2.Email != "alice@new.example" || s.users() != 1 {
		t.Fatalf("second sign-in: %d %+v, %d users", status, me2, s.users())
	}

	// Anyone after the first waits for admission.
	s.emu.AddUser(githubemu.User{Login: "bob", Emails: []githubemu.Email{{Email: "bob@example.com", Primary: true, Verified: true}}})
	s.emu.ApproveAs("bob")
	b3 := newBrowser(t)
	b3.get(t, s.url+"/v1/auth/github")
	if status, bob := s.me(b3); status != http.StatusOK || bob.Username != "bob" || bob.Admitted || bob.Admin {
		t.Fatalf("bob: %d %+v", status, bob)
	}
	if status, _, body := b3.get(t, s.url+"/v1/projects"); status != http.StatusForbidden || !strings.Contains(body, "waiting for admission") {
		t.Fatalf("waiting bob: %d %s", status, body)
	}
}

func TestGitHubSignInStartSetsABoundState(t *testing.T) {
	s := newSignInEnv(t)
	res := s.do("GET", "/v1/auth/github", "")
	if res.Code != http.StatusFound {
		t.Fatalf("%d %s", res.Code, res.body)
	}
	loc, err := url.Parse(res.Header().Get("Location"))
	if err != nil || loc.Query().Get("client_id") != "Iv1.test" || loc.Query().Get("state") == "" || loc.Query().Get("redirect_uri") != "" {
		t.Fatalf("Location %v", loc)
	}
	c := res.Result().Cookies()
	if len(c) != 1 || c[0].Name != stateCookie || !c[0].HttpOnly || c[0].SameSite != http.SameSiteLaxMode || c[0].MaxAge <= 0 || c[0].MaxAge > 600 ||
		!strings.HasPrefix(c[0].Value, loc.Query().Get("state")+".") {
		t.Fatalf("state cookie %+v", c)
	}
	// Two starts, two states.
	if again := s.do("GET", "/v1/auth/github", ""); again.Header().Get("Location") == res.Header().Get("Location") {
		t.Fatal("state reused")
	}
}

func TestGitHubSignInRefusesOpenRedirects(t *testing.T) {
	s := newSignInEnv(t)
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "evil.example", "javascript:alert(1)", "/\r\nSet-Cookie:x=y"} {
		res := s.do("GET", "/v1/auth/github?next="+url.QueryEscape(next), "")
		if len(res.Result().Cookies()) != 0 {
			t.Errorf("next=%q set a cookie", next)
		}
		s.wantProblem(res, http.StatusBadRequest)
	}
	// A tampered state cookie cannot smuggle one in either.
	s.emu.AddUser(githubemu.User{Login: "alice", Emails: []githubemu.Email{{Email: "alice@example.com", Primary: true, Verified: true}}})
	s.emu.ApproveAs("alice")
	res := s.do("GET", "/v1/auth/github/callback?code=x&state=st", "", "Cookie", stateCookie+"=st.Ly9ldmlsLmV4YW1wbGU") // "//evil.example"
	s.wantProblem(res, http.StatusBadRequest)
	if s.users() != 0 {
		t.Fatal("user written")
	}
}

// A callback whose state is not the browser's (a forged link, a
// login-CSRF attempt) or that comes to a browser that started nothing
// writes nothing.
func TestGitHubCallbackChecksState(t *testing.T) {
	s := newSignInEnv(t)
	s.emu.AddUser(githubemu.User{Login: "alice", Emails: []githubemu.Email{{Email: "alice@example.com", Primary: true, Verified: true}}})
	s.emu.ApproveAs("alice")

	// Missing cookie: the attacker's browser got the code, the victim's
	// browser is sent to the callback.
	b := newBrowser(t)
	b.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	start := s.do("GET", "/v1/auth/github", "")
	loc := start.Header().Get("Location")
	res, err := b.Get(loc)
	if err != nil || res.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %v %v", res, err)
	}
	res.Body.Close()
	callback := res.Header.Get("Location")
	status, _, body := newBrowser(t).get(t, callback)
	if status != http.StatusBadRequest || !strings.Contains(body, "did not start") {
		t.Fatalf("no cookie: %d %s", status, body)
	}

	// Mismatch: the browser started its own sign-in, the callback carries
	// another state.
	other := s.do("GET", "/v1/auth/github", "")
	cookie := other.Result().Cookies()[0]
	res2 := s.do("GET", strings.TrimPrefix(callback, s.url), "", "Cookie", stateCookie+"="+cookie.Value)
	if p := s.wantProblem(res2, http.StatusBadRequest); !strings.Contains(p.Detail, "does not match") {
		t.Fatalf("mismatch: %+v", p)
	}
	if s.users() != 0 {
		t.Fatalf("%d users written", s.users())
	}
}

func TestGitHubSignInRefusals(t *testing.T) {
	s := newSignInEnv(t)
	s.emu.AddUser(githubemu.User{Login: "mallory", Email: "ceo@bank.example", Emails: []githubemu.Email{{Email: "ceo@bank.example", Primary: true, Verified: false}}})

	// No verified primary address: the public profile e-mail is not proof.
	s.emu.ApproveAs("mallory")
	b := newBrowser(t)
	status, _, body := b.get(t, s.url+"/v1/auth/github")
	if status != http.StatusForbidden || !strings.Contains(body, "verified") {
		t.Fatalf("unverified: %d %s", status, body)
	}
	if st, _ := s.me(b); st != http.StatusUnauthorized || s.users() != 0 {
		t.Fatalf("unverified signed in: %d, %d users", st, s.users())
	}

	// The user clicks Cancel on GitHub.
	s.emu.ApproveAs("")
	status, _, body = b.get(t, s.url+"/v1/auth/github")
	if status != http.StatusForbidden || !strings.Contains(body, "access_denied") {
		t.Fatalf("denied: %d %s", status, body)
	}
	if st, _ := s.me(b); st != http.StatusUnauthorized || s.users() != 0 {
		t.Fatalf("denied signed in: %d, %d users", st, s.users())
	}

	// A code GitHub does not know (replayed, expired).
	start := s.do("GET", "/v1/auth/github", "")
	c := start.Result().Cookies()[0]
	state, _, _ := strings.Cut(c.Value, ".")
	s.wantProblem(s.do("GET", "/v1/auth/github/callback?code=bogus&state="+state, "", "Cookie", stateCookie+"="+c.Value), http.StatusBadRequest)
}

// Without GitHub credentials the routes do not exist.
func TestGitHubSignInIsOffWithoutCredentials(t *testing.T) {
	e := newEnv(t)
	e.api.GitHub = nil
	e.handler, e.routes = e.api.build()
	e.wantProblem(e.do("GET", "/v1/auth/github", ""), http.StatusNotFound)
}

// The sign-in routes are documented, as redirects.
func TestGitHubSignInIsDocumented(t *testing.T) {
	s := newSignInEnv(t)
	res := s.do("GET", OpenAPIPath, "")
	var d struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Headers map[string]any `json:"headers"`
			} `json:"responses"`
		} `json:"paths"`
	}
	res.decode(t, &d)
	for _, p := range []string{"/v1/auth/github", "/v1/auth/github/callback"} {
		r, ok := d.Paths[p]["get"].Responses["302"]
		if !ok || r.Headers["Location"] == nil {
			t.Errorf("%s: %+v", p, d.Paths[p])
		}
	}
	// Every documented route is served, here too.
	for _, op := range s.document().operations() {
		if _, pattern := s.routes.Handler(httptest.NewRequest(op.method, param.ReplaceAllString(op.path, "x"), nil)); pattern == "" {
			t.Errorf("%s %s is documented but not routed", op.method, op.path)
		}
	}
}
