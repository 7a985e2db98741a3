package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// userEnv is the real public API on an httptest server, over a database of
// the test's own, and a home for the CLI's config.
type userEnv struct {
	t      *testing.T
	pool   *pgxpool.Pool
	api    *api.API
	url    string
	config string // XDG_CONFIG_HOME
	dir    string // the directory commands run in (-C)
}

const testAppsDomain = "apps.zeitwork.test"

func newUserEnv(t *testing.T) *userEnv {
	t.Helper()
	pool := testdb.New(t)
	log := zlog.Discard()
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseRing(secret.NewKey("t1"))
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.Start(t)
	svc, err := domains.New(pool, q, domains.Config{
		EdgeHost: "edge.zeitwork.test", PlatformDomains: []string{testAppsDomain}, Resolver: domains.NewResolver(dns.Addr),
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: 24 * time.Hour,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	a := &api.API{
		Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool},
		Variables: project.Variables{DB: pool, Keys: keys},
		Deploys:   api.Deploys{DB: pool, Queue: q, AppsDomain: testAppsDomain},
		Domains:   project.Domains{DB: pool, Service: svc},
		// The smallest interval the API can state keeps the login test short.
		Devices: account.Devices{Interval: time.Second},
		Log:     log, Dev: true,
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &userEnv{t: t, pool: pool, api: a, url: srv.URL, config: t.TempDir(), dir: t.TempDir()}
}

// run runs a user command in-process against the test's API.
func (e *userEnv) run(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return e.runWith(nil, args...)
}

func (e *userEnv) runWith(extra []string, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	environ := append([]string{"XDG_CONFIG_HOME=" + e.config, "ZEITWORK_API_URL=" + e.url}, extra...)
	args = append(args[:1:1], append([]string{"-C", e.dir}, args[1:]...)...)
	code = Main(context.Background(), args, Env{Environ: environ, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

// ok runs a command that must succeed and returns its stdout.
func (e *userEnv) ok(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	if code != ExitOK {
		e.t.Fatalf("zeitwork %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// okJSON runs a command with --json and decodes its stdout into v.
func (e *userEnv) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("zeitwork %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wantExit runs a command that must fail with code, saying want on stderr.
func (e *userEnv) wantExit(code int, want string, args ...string) {
	e.t.Helper()
	got, out, errOut := e.run(args...)
	if got != code || !strings.Contains(errOut, want) {
		e.t.Fatalf("zeitwork %s: exit %d (want %d)\nstdout: %s\nstderr: %s (want %q)", strings.Join(args, " "), got, code, out, errOut, want)
	}
}

// signUp makes an admitted user with a browser session.
func (e *userEnv) signUp(n int64, login string) (account.User, string) {
	e.t.Helper()
	ctx := context.Background()
	u, s, err := e.api.Accounts.SignIn(ctx, account.Profile{GitHubUserID: n, Login: login, Email: login + "@example.com"})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.api.Accounts.Admit(ctx, u.ID); err != nil {
		e.t.Fatal(err)
	}
	return u, s.Token
}

// tokenFor gives a user an API token, as the dashboard would.
func (e *userEnv) tokenFor(u account.User) string {
	e.t.Helper()
	tok, err := e.api.Accounts.CreateToken(context.Background(), u.ID, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.Secret
}

func (e *userEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestLoginDeviceFlow signs in the way a person does: the CLI shows a
// code, a signed-in browser session approves it, the CLI's poll gets a
// token; then whoami works and logout revokes the token.
func TestLoginDeviceFlow(t *testing.T) {
	e := newUserEnv(t)
	_, session := e.signUp(1, "alice")

	var out, errOut testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(context.Background(), []string{"login", "--name", "test laptop"},
			Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config, "ZEITWORK_API_URL=" + e.url}, Stdout: &out, Stderr: &errOut})
	}()
	codeRe := regexp.MustCompile(`enter the code ([A-Z0-9]{4}-[A-Z0-9]{4})`)
	var userCode string
	for deadline := time.Now().Add(30 * time.Second); userCode == ""; time.Sleep(20 * time.Millisecond) {
		if m := codeRe.FindStringSubmatch(errOut.String()); m != nil {
			userCode = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no user code printed; stderr: %q", errOut.String())
		}
	}
	if !strings.Contains(errOut.String(), e.url+"/device") {
		t.Errorf("the prompt does not name the approval page: %q", errOut.String())
	}

	req, _ := http.NewRequest("POST", e.url+"/v1/auth/device/approve", strings.NewReader(`{"user_code":"`+userCode+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: session})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("approve: %d", res.StatusCode)
	}
	select {
	case code := <-done:
		if code != ExitOK || !strings.Contains(out.String(), "Signed in to "+e.url+" as alice.") {
			t.Fatalf("login: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("login did not finish after the approval; stderr: %q", errOut.String())
	}

	// The token is the user's own, in a file only they can read.
	creds := filepath.Join(e.config, "zeitwork", "credentials.json")
	if m := fileMode(t, creds); m != 0o600 {
		t.Errorf("credentials mode %o, want 600", m)
	}
	if m := fileMode(t, filepath.Dir(creds)); m != 0o700 {
		t.Errorf("config dir mode %o, want 700", m)
	}
	var saved savedLogin
	b, _ := os.ReadFile(creds)
	if err := json.Unmarshal(b, &saved); err != nil || !strings.HasPrefix(saved.Token, "zw_") || saved.TokenID == "" || saved.APIURL != e.url {
		t.Fatalf("saved login %s: %v", b, err)
	}
	if strings.Contains(out.String()+errOut.String(), saved.Token) {
		t.Error("login printed the token")
	}

	if got := e.ok("whoami"); !strings.Contains(got, "alice (alice@example.com) at "+e.url) {
		t.Errorf("whoami: %q", got)
	}
	var me client.User
	e.okJSON(&me, "whoami")
	if me.Username != "alice" {
		t.Errorf("whoami --json: %+v", me)
	}

	// logout revokes the token at the API, not only here.
	if got := e.ok("logout"); !strings.Contains(got, "Signed out") {
		t.Errorf("logout: %q", got)
	}
	if _, err := os.Stat(creds); !os.IsNotExist(err) {
		t.Errorf("credentials still there: %v", err)
	}
	c, err := client.NewAPI(e.url, saved.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.GetMeWithResponse(context.Background()); err != nil || res.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("the revoked token: %v %v", res.StatusCode(), err)
	}
	e.wantExit(ExitNotSignedIn, "not signed in", "whoami")
	if got := e.ok("logout"); !strings.Contains(got, "Not signed in") {
		t.Errorf("second logout: %q", got)
	}
}

// TestUserCommands drives projects, link, env, domains, deployments and
// rollback end to end against the real API.
func TestUserCommands(t *testing.T) {
	e := newUserEnv(t)
	alice, _ := e.signUp(1, "alice")
	token := e.tokenFor(alice)

	if got := e.ok("login", "--token", token); !strings.Contains(got, "as alice") {
		t.Fatalf("login --token: %q", got)
	}
	if m := fileMode(t, filepath.Join(e.config, "zeitwork", "credentials.json")); m != 0o600 {
		t.Errorf("credentials mode %o, want 600", m)
	}
	if got := e.ok("projects"); !strings.Contains(got, "No projects yet") {
		t.Errorf("projects with none: %q", got)
	}

	var p client.Project
	e.okJSON(&p, "projects", "create", "Shop Front", "--slug", "shop")
	if p.Slug != "shop" || p.Name != "Shop Front" {
		t.Fatalf("created %+v", p)
	}
	if got := e.ok("projects", "ls"); !strings.Contains(got, "shop") || !strings.Contains(got, "Shop Front") || !strings.Contains(got, "SLUG") || strings.Contains(got, "\x1b[") {
		t.Errorf("projects ls (not a terminal: no colours):\n%s", got)
	}
	var ps []client.Project
	e.okJSON(&ps, "projects", "ls")
	if len(ps) != 1 || ps[0].Id != p.Id {
		t.Errorf("projects ls --json: %+v", ps)
	}

	// Linked: the directory and those below it work on the project.
	if got := e.ok("link", "shop"); !strings.Contains(got, "Linked") {
		t.Errorf("link: %q", got)
	}
	var l link
	b, err := os.ReadFile(filepath.Join(e.dir, linkFile))
	if err != nil || json.Unmarshal(b, &l) != nil || l.ProjectID != p.Id.String() {
		t.Fatalf("link file %s: %v", b, err)
	}
	sub := filepath.Join(e.dir, "web", "src")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}

	// env
	{
		const secretValue = "postgres://u:hunter2@db/x"
		got := e.ok("env", "set", "DATABASE_URL="+secretValue, `GREETING=say "hi"`)
		if !strings.Contains(got, "Set DATABASE_URL") || strings.Contains(got, "hunter2") {
			t.Errorf("env set: %q", got)
		}
		got = e.ok("env", "ls")
		if !strings.Contains(got, "DATABASE_URL") || !strings.Contains(got, "GREETING") || strings.Contains(got, "hunter2") {
			t.Errorf("env ls:\n%s", got)
		}
		var vs []map[string]any
		e.okJSON(&vs, "env", "ls")
		if len(vs) != 2 || strings.Contains(string(mustJSON(t, vs)), "hunter2") {
			t.Errorf("env ls --json: %v", vs)
		}
		// From a subdirectory, through the link.
		code, out, errOut := e.runWith(nil, "env", "pull", "-C", sub)
		if code != ExitOK || strings.Contains(out+errOut, "hunter2") {
			t.Fatalf("env pull: %d %q %q", code, out, errOut)
		}
		envFile := filepath.Join(sub, ".env")
		b, err := os.ReadFile(envFile)
		want := "DATABASE_URL=\"" + secretValue + "\"\nGREETING=\"say \\\"hi\\\"\"\n"
		if err != nil || string(b) != want {
			t.Errorf("pulled %q (%v), want %q", b, err, want)
		}
		if m := fileMode(t, envFile); m != 0o600 {
			t.Errorf(".env mode %o, want 600", m)
		}
		if got := e.ok("env", "pull", "-"); !strings.Contains(got, secretValue) {
			t.Errorf("env pull -: %q", got)
		}
		e.ok("env", "unset", "GREETING")
		e.okJSON(&vs, "env", "ls")
		if len(vs) != 1 || vs[0]["name"] != "DATABASE_URL" {
			t.Errorf("after unset: %v", vs)
		}
		e.wantExit(ExitNotFound, "GREETING", "env", "unset", "GREETING")
		e.wantExit(ExitUsage, "is not NAME=VALUE", "env", "set", "NOVALUE")
		e.wantExit(ExitUsage, "needs a subcommand", "env")
	}

	// domains
	{
		got := e.ok("domains", "add", "www.example.com")
		for _, want := range []string{"Added www.example.com to shop", "pending", "CNAME", "www.example.com", "edge.zeitwork.test", "domains verify www.example.com"} {
			if !strings.Contains(got, want) {
				t.Errorf("domains add does not say %q:\n%s", want, got)
			}
		}
		var ds []client.Domain
		e.okJSON(&ds, "domains", "ls")
		if len(ds) != 1 || ds[0].Name != "www.example.com" || ds[0].Status != client.DomainStatusPending {
			t.Errorf("domains ls --json: %+v", ds)
		}
		// Nothing points at the edge yet: still pending, with the record.
		if got := e.ok("domains", "verify", "www.example.com"); !strings.Contains(got, "CNAME") {
			t.Errorf("domains verify:\n%s", got)
		}
		e.ok("domains", "rm", "www.example.com")
		if got := e.ok("domains", "ls"); !strings.Contains(got, "no custom domains") {
			t.Errorf("after rm: %q", got)
		}
		e.wantExit(ExitNotFound, "", "domains", "rm", "www.example.com")
		e.wantExit(ExitUsage, "", "domains", "add", "not a domain!")
	}

	// deployments and rollback
	{
		if got := e.ok("deployments"); !strings.Contains(got, "no deployments yet") {
			t.Errorf("deployments with none: %q", got)
		}
		e.wantExit(ExitFailure, "no earlier production deployment", "rollback")
		// Two built deployments: the older was live before the newer.
		c, err := client.NewAPI(e.url, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		img := id.New()
		e.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, p.Id)
		deploy := func(status deployment.Status, activeAgo time.Duration) client.Deployment {
			key := "uploads/" + p.Id.String() + "/src.tar.gz"
			res, err := c.CreateDeploymentWithResponse(context.Background(), client.CreateDeploymentInputBody{ProjectId: p.Id, ArchiveKey: &key})
			if err := client.Check(res, err); err != nil {
				t.Fatal(err)
			}
			d := res.JSON201
			e.exec(`UPDATE deployments SET image_id = $1, status = $2, active_at = now() - $3::interval WHERE id = $4`, img, string(status), activeAgo.String(), d.Id)
			return *d
		}
		old := deploy(deployment.StatusStopped, 2*time.Hour)
		cur := deploy(deployment.StatusActive, time.Hour)
		e.exec(`UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, cur.Id, p.Id)

		got := e.ok("deployments")
		if !strings.Contains(got, old.Id.String()) || !strings.Contains(got, cur.Id.String()+"   active (live)") {
			t.Errorf("deployments:\n%s", got)
		}
		var ds []client.Deployment
		e.okJSON(&ds, "deployments")
		if len(ds) != 2 || ds[0].Id != cur.Id {
			t.Errorf("deployments --json (newest first): %+v", ds)
		}

		// Without an argument: the one live before the current.
		var d client.Deployment
		e.okJSON(&d, "rollback")
		if d.Id != old.Id {
			t.Errorf("rolled back to %s, want %s", d.Id, old.Id)
		}
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'deployment_id' = $2`,
			deployment.RollbackTask{}.Kind(), old.Id.String()).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d rollback tasks (%v)", n, err)
		}
		// By a prefix of its id, as the table shows it.
		if got := e.ok("rollback", old.Id.String()[:13]); !strings.Contains(got, "Rolling back to "+old.Id.String()) {
			t.Errorf("rollback <prefix>: %q", got)
		}
		if got := e.ok("rollback", cur.Id.String()); !strings.Contains(got, "already live") {
			t.Errorf("rollback to the live one: %q", got)
		}
		e.wantExit(ExitNotFound, "no deployment", "rollback", "ffff")
		e.wantExit(ExitNotFound, "", "rollback", id.New().String())
		if got := e.ok("open"); strings.TrimSpace(got) != "https://shop."+testAppsDomain {
			t.Errorf("open: %q", got)
		}

		// The stopped deployment's build log, read and followed to its end.
		e.api.Logs = api.Logs{Reader: &logs.Reader{Pool: e.pool, Poll: 50 * time.Millisecond, Log: zlog.Discard()}, KeepAlive: 20 * time.Millisecond}
		var build uuid.UUID
		if err := e.pool.QueryRow(context.Background(), `SELECT id FROM builds WHERE deployment_id = $1`, old.Id).Scan(&build); err != nil {
			t.Fatal(err)
		}
		e.exec(`UPDATE builds SET status = 'succeeded' WHERE id = $1`, build) // a followed build log ends with its build
		w := buildlog.NewWriter(e.pool, build, buildlog.DefaultLimits, zlog.Discard())
		for _, l := range []string{"step 1", "step 2"} {
			w.Line(buildlog.Stdout, "%s", l)
		}
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"logs", old.Id.String()}, {"logs", "-f", old.Id.String()[:13]}, {"logs", "--build", "-f", old.Id.String()}} {
			if got := e.ok(args...); got != "build    | step 1\nbuild    | step 2\n" {
				t.Errorf("%v: %q", args, got)
			}
		}
		var line client.LogLine
		out := e.ok("logs", old.Id.String(), "--json")
		if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &line); err != nil || line.Text != "step 1" || line.Source != client.LogLineSourceBuild {
			t.Errorf("logs --json: %q %v", out, err)
		}
		// Without an argument: the newest deployment, whose log is empty.
		if got := e.ok("logs", "--runtime"); got != "" {
			t.Errorf("logs of the newest: %q", got)
		}
		e.wantExit(ExitUsage, "exclude each other", "logs", "--build", "--runtime")
	}

	// Deleting needs --yes; then the project is gone.
	e.wantExit(ExitUsage, "--yes", "projects", "rm", "shop")
	e.ok("projects", "rm", "shop", "--yes")
	e.wantExit(ExitNotFound, `no project "shop"`, "projects", "rm", "shop", "--yes")
	e.wantExit(ExitNotFound, "", "env", "ls") // the link names a project that is gone
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUserExitCodes: each kind of failure has its own exit code.
func TestUserExitCodes(t *testing.T) {
	e := newUserEnv(t)
	e.wantExit(ExitNotSignedIn, "not signed in", "whoami")
	e.wantExit(ExitNotSignedIn, "not signed in", "projects")
	e.wantExit(ExitNotSignedIn, "login", "login", "--token", "zw_not_a_token")
	if _, err := os.Stat(filepath.Join(e.config, "zeitwork", "credentials.json")); !os.IsNotExist(err) {
		t.Errorf("a refused token was saved: %v", err)
	}
	// A token from the environment, for CI.
	alice, _ := e.signUp(1, "alice")
	code, out, _ := e.runWith([]string{"ZEITWORK_TOKEN=" + e.tokenFor(alice)}, "whoami")
	if code != ExitOK || !strings.Contains(out, "alice") {
		t.Errorf("ZEITWORK_TOKEN: %d %q", code, out)
	}
	e.ok("login", "--token", e.tokenFor(alice))

	e.wantExit(ExitUsage, "missing arguments", "projects", "create")
	e.wantExit(ExitUsage, "unknown flag", "projects", "--bogus")
	e.wantExit(ExitUsage, `unknown subcommand "frobnicate"`, "domains", "frobnicate")
	e.wantExit(ExitUsage, "not linked", "env", "ls")
	e.wantExit(ExitNotFound, `no project "nope"`, "link", "nope")
	e.wantExit(ExitNotFound, "", "env", "ls", "--project", id.New().String())
	e.wantExit(ExitUsage, "not linked", "deploy")
	// An API that is not there is a failure, not a usage error.
	code, _, errOut := e.runWith([]string{"ZEITWORK_API_URL=http://127.0.0.1:1"}, "projects")
	if code != ExitFailure || !strings.Contains(errOut, "the API") {
		t.Errorf("unreachable API: %d %q", code, errOut)
	}
}

// TestColours: colours only on a terminal, and never with NO_COLOR.
func TestColours(t *testing.T) {
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("a terminal to write to: %v", err)
	}
	defer tty.Close()
	for _, tc := range []struct {
		w     any
		vars  []string
		color bool
	}{
		{tty, nil, true},
		{tty, []string{"NO_COLOR=1"}, false},
		{tty, []string{"TERM=dumb"}, false},
		{&bytes.Buffer{}, nil, false},
	} {
		u := &user{env: Env{Environ: tc.vars}}
		switch w := tc.w.(type) {
		case *os.File:
			u.env.Stdout = w
		case *bytes.Buffer:
			u.env.Stdout = w
		}
		got := u.status("active")
		if colored := strings.Contains(got, "\x1b["); colored != tc.color {
			t.Errorf("%T %v: %q, want colours %v", tc.w, tc.vars, got, tc.color)
		}
	}
}

// TestDeploy: deploy packs the directory without what its ignore files
// leave out, uploads it the way the API says (streamed through the API,
// or a presigned form straight to S3), follows the build and prints the
// URL once the deployment is live. A stand-in builder and operator move
// the deployment along.
func TestDeploy(t *testing.T) {
	e := newUserEnv(t)
	mc, s3 := testenv.Bucket(t, "clideploy")
	store := &upload.Store{S3: mc, Bucket: s3.Bucket, MaxBytes: 1 << 20, Expiry: time.Minute}
	e.api.Uploads = store
	e.api.Logs = api.Logs{Reader: &logs.Reader{Pool: e.pool, Poll: 50 * time.Millisecond, Log: zlog.Discard()}, KeepAlive: 20 * time.Millisecond}
	alice, _ := e.signUp(1, "alice")
	e.ok("login", "--token", e.tokenFor(alice))
	var p client.Project
	e.okJSON(&p, "projects", "create", "app", "--link")

	files := map[string]string{
		"index.html": "hi", ".gitignore": "node_modules/\n*.log\n", ".zeitworkignore": "drafts/\n!important.log\n",
		"node_modules/x.js": "x", "debug.log": "x", "important.log": "keep", "drafts/a.md": "x",
		"sub/.gitignore": "secret.txt\n", "sub/secret.txt": "x", "sub/keep.txt": "keep",
	}
	for name, content := range files {
		path := filepath.Join(e.dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantFiles := []string{".gitignore", ".zeitworkignore", "important.log", "index.html", "sub/", "sub/.gitignore", "sub/keep.txt"}

	// The stand-in platform: builds every queued deployment and makes it live.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			var dep, build uuid.UUID
			err := e.pool.QueryRow(ctx, `SELECT d.id, b.id FROM deployments d JOIN builds b ON b.deployment_id = d.id
				WHERE d.project_id = $1 AND d.status = 'queued' LIMIT 1`, p.Id).Scan(&dep, &build)
			if err != nil {
				continue
			}
			w := buildlog.NewWriter(e.pool, build, buildlog.DefaultLimits, zlog.Discard())
			w.Line(buildlog.Stdout, "built %s", "it")
			_ = w.Close(ctx)
			_, _ = e.pool.Exec(ctx, `UPDATE builds SET status = 'succeeded' WHERE id = $1`, build)
			_, _ = e.pool.Exec(ctx, `UPDATE deployments SET status = 'stopped' WHERE project_id = $1 AND status = 'active'`, p.Id)
			_, _ = e.pool.Exec(ctx, `UPDATE deployments SET status = 'active', active_at = now() WHERE id = $1`, dep)
			_, _ = e.pool.Exec(ctx, `UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, dep, p.Id)
		}
	}()

	archived := func(d client.Deployment) []string {
		t.Helper()
		if d.ArchiveKey == nil {
			t.Fatalf("deployment %s has no archive", d.Id)
		}
		obj, err := mc.GetObject(context.Background(), s3.Bucket, *d.ArchiveKey, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		gz, err := gzip.NewReader(obj)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		slices.Sort(names)
		return names
	}

	// Streamed through the API; the URL alone on stdout.
	code, out, errOut := e.run("deploy")
	if code != ExitOK || out != "https://app."+testAppsDomain+"\n" || !strings.Contains(errOut, "build    | built it") || !strings.Contains(errOut, "Uploading 6 files") {
		t.Fatalf("deploy: exit %d\nstdout: %q\nstderr: %s", code, out, errOut)
	}
	var ds []client.Deployment
	e.okJSON(&ds, "deployments")
	if len(ds) != 1 {
		t.Fatalf("%d deployments", len(ds))
	}
	if got := archived(ds[0]); !slices.Equal(got, wantFiles) {
		t.Errorf("archived %v, want %v", got, wantFiles)
	}

	// With --json it waits the same way, through the build's log stream
	// unshown, and prints the live deployment alone.
	code, out, errOut = e.run("deploy", "--json")
	var live client.Deployment
	if err := json.Unmarshal([]byte(out), &live); code != ExitOK || err != nil || live.Status != client.DeploymentStatusActive || strings.Contains(errOut, "built it") {
		t.Fatalf("deploy --json: exit %d (%v)\nstdout: %q\nstderr: %s", code, err, out, errOut)
	}

	// Straight to S3 with a presigned form, from another directory.
	store.Presigner = mc
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "main.go"), []byte("package main"), 0o644); err != nil {
		t.Fatal(err)
	}
	var d client.Deployment
	e.okJSON(&d, "deploy", other, "--project", "app", "--no-wait")
	if d.ProjectId != p.Id {
		t.Fatalf("deploy --json: %+v", d)
	}
	if got := archived(d); !slices.Equal(got, []string{"main.go"}) {
		t.Errorf("archived %v", got)
	}
	e.wantExit(ExitUsage, "not a directory", "deploy", filepath.Join(other, "main.go"))

	// A relative directory is relative to -C, not to the process.
	if err := os.MkdirAll(filepath.Join(e.dir, "rel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "rel", "rel.go"), []byte("package rel"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.okJSON(&d, "deploy", "./rel", "--project", "app", "--no-wait")
	if got := archived(d); !slices.Equal(got, []string{"rel.go"}) {
		t.Errorf("deploy ./rel with -C archived %v", got)
	}
}

// TestDeployDetaches: Ctrl-C while deploy watches stops the watching, not
// the deployment.
func TestDeployDetaches(t *testing.T) {
	e := newUserEnv(t)
	mc, s3 := testenv.Bucket(t, "clidetach")
	e.api.Uploads = &upload.Store{S3: mc, Bucket: s3.Bucket, MaxBytes: 1 << 20, Expiry: time.Minute}
	e.api.Logs = api.Logs{Reader: &logs.Reader{Pool: e.pool, Poll: 50 * time.Millisecond, Log: zlog.Discard()}, KeepAlive: 20 * time.Millisecond}
	alice, _ := e.signUp(1, "alice")
	e.ok("login", "--token", e.tokenFor(alice))
	var p client.Project
	e.okJSON(&p, "projects", "create", "app", "--link")
	if err := os.WriteFile(filepath.Join(e.dir, "index.html"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"deploy", "-C", e.dir},
			Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config, "ZEITWORK_API_URL=" + e.url}, Stdout: &out, Stderr: &errOut})
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(errOut.String(), "Deploying app"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("deploy did not start: %q", errOut.String())
		}
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != ExitOK || !strings.Contains(errOut.String(), "Stopped watching; the deployment goes on") {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("deploy did not stop after Ctrl-C")
	}
	var status string
	if err := e.pool.QueryRow(context.Background(), `SELECT status FROM deployments WHERE project_id = $1`, p.Id).Scan(&status); err != nil || status != "queued" {
		t.Fatalf("the deployment is %q (%v), want still queued", status, err)
	}
}

func TestAdminCommands(t *testing.T) {
	e := newUserEnv(t)
	alice, _ := e.signUp(1, "alice") // the first user: the admin
	e.ok("login", "--token", e.tokenFor(alice))
	bob, _, err := e.api.Accounts.SignIn(context.Background(), account.Profile{GitHubUserID: 2, Login: "bob", Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.ok("admin", "waitlist"); !strings.Contains(got, "bob") || !strings.Contains(got, "signed in, waiting") {
		t.Fatalf("admin waitlist:\n%s", got)
	}
	e.wantExit(ExitNotFound, `nobody called "carol" is waiting`, "admin", "admit", "carol")
	if got := e.ok("admin", "admit", "BOB"); !strings.Contains(got, "Admitted bob") {
		t.Fatalf("admin admit: %q", got)
	}
	if got, err := e.api.Accounts.User(context.Background(), bob.ID); err != nil || !got.Admitted {
		t.Fatalf("bob after admit: %+v, %v", got, err)
	}
	if got := e.ok("admin", "waitlist"); !strings.Contains(got, "Nobody is waiting.") {
		t.Fatalf("admin waitlist after admitting: %q", got)
	}
	// Someone who is not an admin is refused by the API, not by the CLI:
	// admin operations are hidden from them (404).
	carol, _ := e.signUp(3, "carol")
	e.ok("login", "--token", e.tokenFor(carol))
	if code, _, errOut := e.run("admin", "waitlist"); code != ExitNotFound || !strings.Contains(errOut, "not found") {
		t.Fatalf("admin waitlist as a non-admin: exit %d, %q", code, errOut)
	}
}
