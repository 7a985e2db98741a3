package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/account"
)

// waiting signs a user in without admitting them, as GitHub sign-in does
// for everyone but the first user.
func (e *env) waiting(n int64, login string) user {
	e.t.Helper()
	u, s, err := e.api.Accounts.SignIn(context.Background(), account.Profile{GitHubUserID: n, Login: login, Email: login + "@example.com"})
	if err != nil {
		e.t.Fatal(err)
	}
	return user{User: u, cookie: s.Token}
}

func TestWaitingUsersSeeOnlyThemselves(t *testing.T) {
	e := newEnv(t)
	first := e.waiting(1, "root")
	if !first.Admin || !first.Admitted {
		t.Fatalf("first user: %+v", first.User)
	}
	bob := e.waiting(2, "bob")
	if bob.Admin || bob.Admitted {
		t.Fatalf("second user: %+v", bob.User)
	}

	var me User
	res := e.do("GET", "/v1/me", "", session(bob)...)
	if res.decode(t, &me); res.Code != http.StatusOK || me.Admitted || me.Username != "bob" || !strings.Contains(res.body, `"admitted":false`) {
		t.Fatalf("GET /v1/me: %d %s", res.Code, res.body)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/projects", ""},
		{"POST", "/v1/projects", `{"name":"x"}`},
		{"GET", "/v1/tokens", ""},
		{"POST", "/v1/tokens", `{"name":"x"}`},
		{"GET", "/v1/admin/waitlist", ""},
	} {
		if p := e.wantProblem(e.do(c.method, c.path, c.body, session(bob)...), http.StatusForbidden); !strings.Contains(p.Detail, "waiting for admission") {
			t.Errorf("%s %s: %+v", c.method, c.path, p)
		}
	}

	// The admin sees bob waiting and admits him; a non-admin cannot.
	carol := e.signIn(3, "carol") // admitted, not an admin
	e.wantProblem(e.do("GET", "/v1/admin/waitlist", "", session(carol)...), http.StatusNotFound)
	e.wantProblem(e.do("POST", "/v1/admin/users/"+bob.ID.String()+"/admit", "", session(carol)...), http.StatusNotFound)

	var list struct {
		Users []User `json:"users"`
	}
	res = e.do("GET", "/v1/admin/waitlist", "", session(first)...)
	if res.decode(t, &list); res.Code != http.StatusOK || len(list.Users) != 1 || list.Users[0].ID != bob.ID {
		t.Fatalf("waitlist: %d %s", res.Code, res.body)
	}
	for range 2 { // admitting twice is fine
		if res := e.do("POST", "/v1/admin/users/"+bob.ID.String()+"/admit", "", session(first)...); res.Code != http.StatusNoContent {
			t.Fatalf("admit: %d %s", res.Code, res.body)
		}
	}
	e.wantProblem(e.do("POST", "/v1/admin/users/"+first.ID.String()[:8]+"/admit", "", session(first)...), http.StatusNotFound)
	e.wantProblem(e.do("POST", "/v1/admin/users/00000000-0000-0000-0000-000000000000/admit", "", session(first)...), http.StatusNotFound)

	if res := e.do("GET", "/v1/projects", "", session(bob)...); res.Code != http.StatusOK {
		t.Fatalf("admitted bob: %d %s", res.Code, res.body)
	}
	res = e.do("GET", "/v1/admin/waitlist", "", session(first)...)
	if res.decode(t, &list); len(list.Users) != 0 {
		t.Fatalf("waitlist after admission: %s", res.body)
	}
	// Signing in again keeps the admission.
	again := e.waiting(2, "bob")
	if !again.Admitted {
		t.Fatalf("re-sign-in: %+v", again.User)
	}
}

func TestJoinWaitlist(t *testing.T) {
	e := newEnv(t)
	for _, email := range []string{"new@example.com", "New@Example.com"} {
		if res := e.do("POST", "/v1/waitlist", `{"email":"`+email+`"}`); res.Code != http.StatusAccepted || res.body != "" {
			t.Fatalf("%s: %d %s", email, res.Code, res.body)
		}
	}
	for _, bad := range []string{`{"email":"nope"}`, `{"email":""}`, `{"email":"a@b@c"}`, `{"email":"Eve <eve@example.com>"}`, `{}`, `{"email":"` + strings.Repeat("a", 250) + `@example.com"}`} {
		e.wantProblem(e.do("POST", "/v1/waitlist", bad), http.StatusUnprocessableEntity)
	}
	root := e.signIn(1, "root")
	var list struct {
		Emails []WaitlistEntry `json:"emails"`
	}
	res := e.do("GET", "/v1/admin/waitlist", "", bearer(root)...)
	if res.decode(t, &list); res.Code != http.StatusOK || len(list.Emails) != 1 || list.Emails[0].Email != "new@example.com" {
		t.Fatalf("waitlist: %d %s", res.Code, res.body)
	}
}
