package api

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// testKeys is the ring the tests' API encrypts with.
var testKeys = func() *secret.Ring {
	r, err := secret.ParseRing(secret.NewKey("t1"))
	if err != nil {
		panic(err)
	}
	return r
}()

type revealed struct {
	EnvVariable
	Value string `json:"value"`
}

func TestEnvVariables(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	e.api.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"App"}`)
	base := "/v1/projects/" + p.ID.String() + "/env"
	const value = "postgres://u:hunter2@db/app"

	res := e.do("PUT", base+"/DATABASE_URL", `{"value":"`+value+`"}`, bearer(alice)...)
	var set EnvVariable
	res.decode(t, &set)
	if res.Code != http.StatusOK || set.Name != "DATABASE_URL" || strings.Contains(res.body, "hunter2") {
		t.Fatalf("PUT: %d %s", res.Code, res.body)
	}

	// What the node agent reads: the stored row, opened with the same
	// binding (see nodeagent's Converger.environment).
	rows, err := db.New(e.pool()).EnvironmentVariableListByProject(context.Background(), p.ID)
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows %v, %v", rows, err)
	}
	if bytes.Contains(rows[0].ValueCiphertext, []byte("hunter2")) {
		t.Fatal("stored in plaintext")
	}
	plain, err := testKeys.Open(rows[0].ValueCiphertext, rows[0].KeyID, secret.EnvContext(p.ID, "DATABASE_URL"))
	if err != nil || string(plain) != value {
		t.Fatalf("the agent opens %q, %v", plain, err)
	}

	// Revealed one at a time; replaced in place.
	var got revealed
	e.do("GET", base+"/DATABASE_URL", "", session(alice)...).decode(t, &got)
	if got.Value != value || got.Name != "DATABASE_URL" {
		t.Fatalf("revealed %+v", got)
	}
	time.Sleep(time.Millisecond) // updated_at must move past created_at
	e.do("PUT", base+"/DATABASE_URL", `{"value":"v2"}`, session(alice)...).decode(t, &set)
	e.do("GET", base+"/DATABASE_URL", "", session(alice)...).decode(t, &got)
	if got.Value != "v2" || !got.UpdatedAt.After(got.CreatedAt) {
		t.Fatalf("replaced %+v", got)
	}

	// Lists show names, never values, page by page.
	for _, n := range []string{"B", "_c", "a1"} {
		if res := e.do("PUT", base+"/"+n, `{"value":"value-of-`+n+`"}`, session(alice)...); res.Code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", n, res.Code, res.body)
		}
	}
	var names []string
	cursor := ""
	for range 5 {
		res := e.do("GET", base+"?limit=3&cursor="+cursor, "", session(alice)...)
		if res.Code != http.StatusOK || strings.Contains(res.body, "value") {
			t.Fatalf("list: %d %s", res.Code, res.body)
		}
		var page struct {
			Items      []EnvVariable `json:"items"`
			NextCursor string        `json:"next_cursor"`
		}
		res.decode(t, &page)
		for _, v := range page.Items {
			names = append(names, v.Name)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if fmt.Sprint(names) != "[DATABASE_URL B _c a1]" {
		t.Fatalf("listed %v", names)
	}

	// Names like POSIX's, not the platform's, within limits; refusals
	// never echo the value.
	for _, c := range []struct{ name, value string }{
		{"1X", "x"}, {"A-B", "x"}, {"PORT", "x"}, {strings.Repeat("A", 256), "x"},
		{"BIG", strings.Repeat("refused-", 64<<10/8+1)},
	} {
		res := e.do("PUT", base+"/"+c.name, `{"value":"`+c.value+`"}`, session(alice)...)
		e.wantProblem(res, http.StatusUnprocessableEntity)
		if strings.Contains(res.body, "refused-") {
			t.Fatalf("the refusal echoes the value: %.200s", res.body)
		}
	}
	e.wantProblem(e.do("PUT", base+"/X", `{}`, session(alice)...), http.StatusUnprocessableEntity)
	if n := e.count(`SELECT count(*) FROM environment_variables`); n != 4 {
		t.Fatalf("%d variables", n)
	}

	// Deleted once.
	if res := e.do("DELETE", base+"/B", "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("DELETE", base+"/B", "", session(alice)...), http.StatusNotFound)
	e.wantProblem(e.do("GET", base+"/B", "", session(alice)...), http.StatusNotFound)
	e.wantProblem(e.do("GET", "/v1/projects/not-a-uuid/env", "", session(alice)...), http.StatusNotFound)

	// A value this API cannot open (a key it lacks) is a 500 whose log
	// names the cause, not the value.
	e.exec(`UPDATE environment_variables SET key_id = 'gone' WHERE name = 'a1'`)
	e.wantProblem(e.do("GET", base+"/a1", "", session(alice)...), http.StatusInternalServerError)
	if !strings.Contains(logs.String(), "unknown key") {
		t.Fatalf("the cause is not logged: %s", logs.String())
	}
	for _, v := range []string{"hunter2", "v2", "value-of-"} {
		if strings.Contains(logs.String(), v) {
			t.Fatalf("a value is logged: %s", logs.String())
		}
	}
}

// TestEnvWithoutKeys: every variable route is documented but answers 503
// when the API has no SECRETS_KEYS.
func TestEnvWithoutKeys(t *testing.T) {
	e := newEnv(t)
	e.api.Variables.Keys = nil
	alice := e.signIn(1, "alice")
	base := "/v1/projects/" + e.createProject(alice, `{"name":"App"}`).ID.String() + "/env"
	for _, c := range []struct{ method, path, body string }{
		{"GET", base, ""}, {"GET", base + "/X", ""}, {"PUT", base + "/X", `{"value":"x"}`}, {"DELETE", base + "/X", ""},
	} {
		if p := e.wantProblem(e.do(c.method, c.path, c.body, session(alice)...), http.StatusServiceUnavailable); p.Detail != "variables are not configured" {
			t.Fatalf("%s %s: %+v", c.method, c.path, p)
		}
	}
}

// TestEnvVariableEnvironments: a variable names the deployments that get
// it; leaving environments out creates it for both and keeps an existing
// variable's, and a bad list is refused with nothing written.
func TestEnvVariableEnvironments(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"App"}`)
	base := "/v1/projects/" + p.ID.String() + "/env"
	set := func(name, body string) EnvVariable {
		t.Helper()
		res := e.do("PUT", base+"/"+name, body, session(alice)...)
		if res.Code != http.StatusOK {
			t.Fatalf("PUT %s %s: %d %s", name, body, res.Code, res.body)
		}
		var v EnvVariable
		res.decode(t, &v)
		return v
	}
	reveal := func(name string) revealed {
		t.Helper()
		var v revealed
		e.do("GET", base+"/"+name, "", session(alice)...).decode(t, &v)
		return v
	}
	envs := func(v EnvVariable) string { return fmt.Sprint(v.Environments) }

	// Without environments: both, as before the field existed.
	if v := set("SHARED", `{"value":"s"}`); envs(v) != "[production preview]" {
		t.Fatalf("default: %+v", v)
	}
	// Given, in any order: stored and shown in one order.
	if v := set("STRIPE_KEY", `{"value":"live","environments":["production"]}`); envs(v) != "[production]" {
		t.Fatalf("production only: %+v", v)
	}
	if v := set("BOTH", `{"value":"b","environments":["preview","production"]}`); envs(v) != "[production preview]" {
		t.Fatalf("both: %+v", v)
	}
	// Changing only the value keeps them; giving them changes them.
	if v := set("STRIPE_KEY", `{"value":"live2"}`); envs(v) != "[production]" {
		t.Fatalf("value only changed them: %+v", v)
	}
	if v := reveal("STRIPE_KEY"); v.Value != "live2" || envs(v.EnvVariable) != "[production]" {
		t.Fatalf("revealed %+v", v)
	}
	if v := set("SHARED", `{"value":"s2","environments":["preview"]}`); envs(v) != "[preview]" {
		t.Fatalf("changed: %+v", v)
	}

	// Refused with a 422, nothing written: not the new variable, not the
	// existing one's value or environments.
	for _, body := range []string{
		`{"value":"x","environments":[]}`,
		`{"value":"x","environments":["staging"]}`,
		`{"value":"x","environments":["production","production"]}`,
		`{"value":"x","environments":["Production"]}`,
		`{"value":"x","environments":"production"}`,
	} {
		for _, name := range []string{"NEW", "STRIPE_KEY"} {
			e.wantProblem(e.do("PUT", base+"/"+name, body, session(alice)...), http.StatusUnprocessableEntity)
		}
	}
	e.wantProblem(e.do("GET", base+"/NEW", "", session(alice)...), http.StatusNotFound)
	if v := reveal("STRIPE_KEY"); v.Value != "live2" || envs(v.EnvVariable) != "[production]" {
		t.Fatalf("a refused PUT changed it: %+v", v)
	}

	// The list shows them too.
	var page struct {
		Items []EnvVariable `json:"items"`
	}
	e.do("GET", base, "", session(alice)...).decode(t, &page)
	got := map[string]string{}
	for _, v := range page.Items {
		got[v.Name] = envs(v)
	}
	if fmt.Sprint(got) != "map[BOTH:[production preview] SHARED:[preview] STRIPE_KEY:[production]]" {
		t.Fatalf("listed %v", got)
	}
}
