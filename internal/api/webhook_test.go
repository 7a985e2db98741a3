package api

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/webhook"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const webhookSecret = "It's a Secret to Everybody"

// hookEnv is an API with the webhook mounted, served on a kernel-chosen
// port so that the emulator delivers over HTTP as GitHub does, and a
// project building alice/app's main branch through the App's installation.
type hookEnv struct {
	*env
	pool    *pgxpool.Pool
	emu     *githubemu.Emulator
	url     string
	dir     string
	project uuid.UUID
}

func newHookEnv(t *testing.T) *hookEnv {
	t.Helper()
	ctx := context.Background()
	pool := testdb.New(t)
	q, err := queue.New(pool, nil, config.Queue{}, zlog.Discard()) // as the api role makes it
	if err != nil {
		t.Fatal(err)
	}
	rc, err := webhook.New(pool, q, webhookSecret, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	a := &API{Accounts: account.Store{DB: pool}, Projects: project.Store{DB: pool}, Log: zlog.Discard(), Webhook: rc}
	h, r := a.build()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	e := &hookEnv{env: &env{t: t, api: a, handler: h, routes: r}, pool: pool, url: srv.URL + WebhookPath, dir: t.TempDir()}
	e.git("init", "-q", "-b", "main")
	e.commit("first")

	e.emu = githubemu.New(githubemu.App{ID: 1, Slug: "zeitwork", WebhookSecret: webhookSecret})
	e.emu.AddUser(githubemu.User{Login: "alice"})
	inst, err := e.emu.AddInstallation(githubemu.Installation{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := e.emu.AddRepository(inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Dir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	org, instRow := id.New(), id.New()
	e.project = id.New()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, 'alice', 'Alice')`, []any{org}},
		{`INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
		  VALUES ($1, $2, $3, 'alice', 'User')`, []any{instRow, inst.ID, org}},
		{`INSERT INTO projects (id, organisation_id, slug, name, github_installation_id, github_repository_id, github_repository_full_name, branch)
		  VALUES ($1, $2, 'app', 'App', $3, $4, 'alice/app', 'main')`, []any{e.project, org, instRow, repo.ID}},
	} {
		if _, err := pool.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *hookEnv) git(args ...string) {
	e.t.Helper()
	cmd := exec.Command("git", append([]string{"-C", e.dir, "-c", "user.name=Alice", "-c", "user.email=alice@example.com"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// commit adds a commit to main.
func (e *hookEnv) commit(message string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, "main.go"), []byte("package main\n\n// "+message+"\nfunc main() {}\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.git("add", ".")
	e.git("commit", "-q", "-m", message)
}

func (e *hookEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// written is every row a delivery can write: deliveries, deployments,
// builds and build tasks.
func (e *hookEnv) written() [4]int {
	return [4]int{
		e.count(`SELECT count(*) FROM webhook_deliveries`),
		e.count(`SELECT count(*) FROM deployments WHERE project_id = $1`, e.project),
		e.count(`SELECT count(*) FROM builds`),
		e.count(`SELECT count(*) FROM river_job WHERE queue = $1 AND kind = $2`, build.Queue, build.Task{}.Kind()),
	}
}

func (e *hookEnv) push() githubemu.Event {
	e.t.Helper()
	ev, err := e.emu.Push(context.Background(), "alice/app", "main", "")
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

func (e *hookEnv) send(d githubemu.Delivery) int {
	e.t.Helper()
	status, err := e.emu.Send(context.Background(), e.url, d)
	if err != nil {
		e.t.Fatal(err)
	}
	return status
}

func TestWebhookPushDeploysOnce(t *testing.T) {
	e := newHookEnv(t)
	d, status, err := e.emu.Deliver(context.Background(), e.url, e.push())
	if err != nil || status != http.StatusOK {
		t.Fatalf("deliver push: %d %v", status, err)
	}
	if got, want := e.written(), [4]int{1, 1, 1, 1}; got != want {
		t.Fatalf("after a push: deliveries, deployments, builds, build tasks = %v, want %v", got, want)
	}
	// The task is the one the build names, on the builders' queue.
	if n := e.count(`SELECT count(*) FROM river_job j JOIN builds b ON j.args->>'build_id' = b.id::text
		JOIN deployments dp ON dp.id = b.deployment_id WHERE dp.project_id = $1 AND j.state = 'available'`, e.project); n != 1 {
		t.Fatalf("%d available build tasks for the project's build, want 1", n)
	}

	if status := e.send(d); status != http.StatusOK {
		t.Fatalf("redelivery: %d", status)
	}
	if got, want := e.written(), [4]int{1, 1, 1, 1}; got != want {
		t.Fatalf("after a redelivery: %v, want %v", got, want)
	}
}

func TestWebhookRefusesATamperedBody(t *testing.T) {
	e := newHookEnv(t)
	d, err := e.emu.NewDelivery(e.push())
	if err != nil {
		t.Fatal(err)
	}
	d.Body = bytes.Replace(d.Body, []byte(`"first`), []byte(`"forged`), 1)
	if status := e.send(d); status != http.StatusUnauthorized {
		t.Fatalf("tampered push: %d, want 401", status)
	}
	d.Signature = ""
	if status := e.send(d); status != http.StatusUnauthorized {
		t.Fatalf("unsigned push: %d, want 401", status)
	}
	if got := e.written(); got != [4]int{} {
		t.Fatalf("refused deliveries wrote deliveries, deployments, builds, build tasks = %v", got)
	}
}

// TestWebhookTakesBodiesUpToItsOwnLimit: GitHub's payloads may be 25 MiB,
// far above the API's 1 MiB.
func TestWebhookTakesBodiesUpToItsOwnLimit(t *testing.T) {
	e := newHookEnv(t)
	body := []byte(`{"zen":"` + strings.Repeat("z", 2<<20) + `"}`)
	d := githubemu.Delivery{ID: uuid.NewString(), Event: "ping", Body: body, Signature: githubemu.Sign(webhookSecret, body)}
	if status := e.send(d); status != http.StatusOK {
		t.Fatalf("2 MiB ping: %d, want 200", status)
	}
}

// TestWebhookIsDocumentedAndServed is the contract test's both directions
// for an API with the webhook: documented without security, routed, and
// nothing routed undocumented.
func TestWebhookIsDocumentedAndServed(t *testing.T) {
	e := newHookEnv(t)
	d := e.document()
	op, ok := d.Paths[WebhookPath]["post"]
	if !ok {
		t.Fatalf("POST %s is not documented", WebhookPath)
	}
	if len(op.Security) != 0 {
		t.Fatalf("POST %s documents security %v; the signature is its authentication", WebhookPath, op.Security)
	}
	ops := d.operations()
	for _, pattern := range e.routes.patterns {
		method, path, _ := strings.Cut(pattern, " ")
		if pattern != "GET "+OpenAPIPath && !slices.Contains(ops, operation{method, path}) {
			t.Errorf("route %q is not documented", pattern)
		}
	}
	// A credential that is no good does not stand in the way: the route
	// does not look at it.
	res := e.do(http.MethodPost, WebhookPath, "{}", "Authorization", "Bearer zw_nonsense", "X-Request-Id", "hook-1")
	if res.Code != http.StatusUnauthorized || !strings.Contains(res.body, "X-Hub-Signature-256") {
		t.Fatalf("unsigned POST: %d %s, want the receiver's 401", res.Code, res.body)
	}
	// Its errors carry the API's request id, in the body and the header.
	var body WebhookError
	res.decode(t, &body)
	if body.RequestID != "hook-1" || res.Header().Get("X-Request-Id") != "hook-1" {
		t.Fatalf("request id %q in the body, %q in the header, want hook-1", body.RequestID, res.Header().Get("X-Request-Id"))
	}
	res = e.do(http.MethodPost, WebhookPath, "{}")
	if res.decode(t, &body); body.RequestID == "" || body.RequestID != res.Header().Get("X-Request-Id") {
		t.Fatalf("request id %q in the body, %q in the header, want one and the same", body.RequestID, res.Header().Get("X-Request-Id"))
	}
}

func TestWebhookNeedsASecret(t *testing.T) {
	e := newEnv(t) // no receiver: no GITHUB_WEBHOOK_SECRET
	if _, ok := e.document().Paths[WebhookPath]; ok {
		t.Fatalf("%s is documented without a receiver", WebhookPath)
	}
	if res := e.do(http.MethodPost, WebhookPath, "{}"); res.Code != http.StatusNotFound {
		t.Fatalf("POST %s: %d %s, want 404", WebhookPath, res.Code, res.body)
	}
}
