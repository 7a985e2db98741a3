// Package web checks the dashboard (packages/web): its API types are
// generated from the current OpenAPI document, and it works in a real
// browser against the real API, and on `zeitwork dev` all the way to a
// live app. It needs Node 22 (scripts/node22.sh), `npm ci` and `npm run
// build` in packages/web, and Debian's chromium; scripts/test prepares
// them (the live test also root, containerd, BuildKit and the registry, as
// test/e2e). Without them the tests skip, and fail under CI=true.
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const pkg = "../../packages/web"

// node is the directory of Node 22's binaries (scripts/node22.sh), with
// packages/web's dependencies installed.
func node(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../scripts/node22.sh").Output()
	if err != nil {
		testenv.Unavailable(t, "Node 22 (scripts/node22.sh)", err)
	}
	if _, err := os.Stat(filepath.Join(pkg, "node_modules/.package-lock.json")); err != nil {
		testenv.Unavailable(t, "packages/web's node_modules (npm ci in packages/web)", err)
	}
	return strings.TrimSpace(string(out))
}

func nodeCmd(t *testing.T, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(bin, "node"), args...)
	cmd.Dir = pkg
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}

// TestAPITypesAreCurrent regenerates app/types/api.d.ts from the checked-in
// OpenAPI document (internal/client/openapi.json, itself checked against the
// API by internal/client's test): a change to the API without `npm run
// types` in packages/web fails here.
func TestAPITypesAreCurrent(t *testing.T) {
	bin := node(t)
	out := filepath.Join(t.TempDir(), "api.d.ts")
	cmd := nodeCmd(t, bin, "node_modules/openapi-typescript/bin/cli.js", "../../internal/client/openapi.json", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openapi-typescript: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(pkg, "app/types/api.d.ts"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("packages/web/app/types/api.d.ts is stale: run `npm run types` in packages/web (with scripts/node22.sh's node first in PATH)")
	}
}

// browserDeps returns Node 22's bin directory, the built dashboard and
// chromium, or skips (fails under CI=true) without one of them.
func browserDeps(t *testing.T) (bin, bundle, chromium string) {
	t.Helper()
	bin = node(t)
	bundle, err := filepath.Abs(filepath.Join(pkg, ".output/public"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "index.html")); err != nil {
		testenv.Unavailable(t, "the built dashboard (npm run build in packages/web)", err)
	}
	chromium, err = exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium (apt-get install chromium; scripts/deps.sh install)", err)
	}
	return bin, bundle, chromium
}

// maxFirstLoadJS is the budget for the JavaScript a first visit loads
// (gzip), from the issue: a dashboard that opens fast on a slow link.
const maxFirstLoadJS = 300 << 10

// TestDashboardInABrowser signs in through the GitHub emulator in headless
// chromium and walks the pages: sign-in, projects (empty, then with a
// deployment's state), a project, a deployment's build log streaming live
// with ANSI colours and an auto-scroll that stops when the user scrolls up;
// a new project from a repository after installing the App, its build log
// and state going live on the open page; build settings, a variable hidden
// until revealed, a domain verified once DNS has its record; a rollback
// behind a confirmation, previews grouped by branch; tokens shown once and
// revoked; deleting a project; the waitlist, the admin admitting a waiting
// user, a stranger who cannot see another user's project, and sign-out.
// packages/web/tests/browser.mjs holds the steps; this test runs the API
// and the hooks the steps call to change the world between them.
func TestDashboardInABrowser(t *testing.T) {
	bin, bundle, chromium := browserDeps(t)

	pool := testdb.New(t)
	log := zlog.Discard()
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	appKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// As on GitHub, the App's first callback URL is sign-in's, and an
	// installation comes back there.
	emu := githubemu.New(githubemu.App{
		ID: 1, Slug: "zeitwork", PublicKey: &appKey.PublicKey, ClientID: "Iv1.web", ClientSecret: "shh",
		CallbackURL: srv.URL + "/v1/auth/github/callback", AuthorizeOnInstall: true,
	})
	gh, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	for i, login := range []string{"alice", "bob"} {
		emu.AddUser(githubemu.User{ID: int64(100 + i), Login: login, Name: login, Emails: []githubemu.Email{{Email: login + "@example.com", Primary: true, Verified: true}}})
	}
	// alice/shop on GitHub, with the App installed on alice's account: the
	// dashboard links the installation to her organisation when she goes
	// through the install page, then imports the repository.
	commits := gitRepo(t, filepath.Join(t.TempDir(), "shop"))
	// A second branch, for the new-project page's branch picker.
	if _, err := commits.git("branch", "staging"); err != nil {
		t.Fatal(err)
	}
	inst, err := emu.AddInstallation(githubemu.Installation{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.AddRepository(inst.ID, githubemu.Repository{Owner: "alice", Name: "shop", Dir: commits.dir}); err != nil {
		t.Fatal(err)
	}
	app, err := githubapp.New(githubapp.Config{
		ID: 1, Slug: "zeitwork", APIURL: gh.APIURL, WebURL: gh.APIURL,
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseRing(secret.NewKey("web"))
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.Start(t)
	domainSvc, err := domains.New(pool, q, domains.Config{
		EdgeHost: edgeHost, PlatformDomains: []string{appsDomain}, Resolver: domains.NewResolver(dns.Addr),
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: 24 * time.Hour,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	accounts := account.Store{DB: pool}
	a := &api.API{
		Accounts: accounts, Projects: project.Store{DB: pool}, Log: log, Dev: true, // http://127.0.0.1
		Deploys:   api.Deploys{DB: pool, Queue: q, AppsDomain: appsDomain},
		GitHub:    &api.GitHubSignIn{ClientID: "Iv1.web", ClientSecret: "shh", WebURL: gh.APIURL, APIURL: gh.APIURL},
		App:       app,
		Variables: project.Variables{DB: pool, Keys: keys},
		Domains:   project.Domains{DB: pool, Service: domainSvc},
		Logs:      api.Logs{Reader: &logs.Reader{Pool: pool, Poll: 100 * time.Millisecond, Log: log}},
	}
	h = api.Web(a.Handler(), os.DirFS(bundle))

	// The hooks browser.mjs calls between its steps.
	var (
		mu    sync.Mutex
		build uuid.UUID
	)
	user := func(login string) (account.User, error) {
		var id uuid.UUID
		if err := pool.QueryRow(t.Context(), `SELECT id FROM users WHERE username = $1`, login).Scan(&id); err != nil {
			return account.User{}, fmt.Errorf("user %s: %w", login, err)
		}
		return accounts.User(t.Context(), id)
	}
	writeLines := func(build uuid.UUID, lines ...string) error {
		w := buildlog.NewWriter(pool, build, buildlog.DefaultLimits, log)
		for _, l := range lines {
			w.Line(buildlog.Stdout, "%s", l)
		}
		return w.Close(t.Context())
	}
	fail := func(w http.ResponseWriter, err error) bool {
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return err != nil
	}
	control := http.NewServeMux()
	control.HandleFunc("GET /approve", func(w http.ResponseWriter, r *http.Request) {
		emu.ApproveAs(r.URL.Query().Get("login"))
	})
	control.HandleFunc("GET /seed", func(w http.ResponseWriter, r *http.Request) {
		p, d, err := seed(t, srv.URL, accounts, user)
		if err == nil {
			mu.Lock()
			err = pool.QueryRow(t.Context(), `SELECT id FROM builds WHERE deployment_id = $1`, d).Scan(&build)
			mu.Unlock()
		}
		if err == nil {
			err = writeLines(build, "step 1/2: installing", "\x1b[31merror text in red\x1b[0m and plain")
		}
		if fail(w, err) {
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"project": p, "deployment": d})
	})
	control.HandleFunc("GET /more", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		prefix := r.URL.Query().Get("prefix")
		if prefix == "" {
			prefix = "filler"
		}
		lines := []string{"step 2/2: live line"}
		if n > 0 {
			lines = lines[:0]
			for i := 1; i <= n; i++ {
				lines = append(lines, fmt.Sprintf("%s %d", prefix, i))
			}
		}
		mu.Lock()
		b := build
		mu.Unlock()
		if d := r.URL.Query().Get("deployment"); d != "" {
			if fail(w, pool.QueryRow(t.Context(), `SELECT id FROM builds WHERE deployment_id = $1`, d).Scan(&b)) {
				return
			}
		}
		fail(w, writeLines(b, lines...))
	})
	// /state plays the builder and the operator: it moves a deployment
	// to status (with an image once built), and an active one onto the
	// project's hosts, retiring the one there before.
	control.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		fail(w, setState(t.Context(), pool, r.URL.Query().Get("deployment"), r.URL.Query().Get("status")))
	})
	// /deploy deploys the head of alice/shop's main again, as alice.
	control.HandleFunc("GET /deploy", func(w http.ResponseWriter, r *http.Request) {
		alice, err := user("alice")
		if fail(w, err) {
			return
		}
		var d struct{ ID string }
		mu.Lock()
		sha := commits.second
		mu.Unlock()
		err = post(t, srv.URL, accounts, alice, "/v1/deployments", map[string]string{"project_id": r.URL.Query().Get("project"), "commit_sha": sha}, &d)
		if fail(w, err) {
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"deployment": d.ID})
	})
	// /preview records a push of branch feature as the webhook would: a
	// preview deployment, live at its own host.
	control.HandleFunc("GET /preview", func(w http.ResponseWriter, r *http.Request) {
		_, err := pool.Exec(t.Context(), `INSERT INTO deployments (id, project_id, status, source_type, github_commit_sha, github_ref,
			commit_message, environment, pushed_by, active_at) VALUES ($1, $2, 'active', 'github', $3, 'refs/heads/feature', 'try the feature', 'preview', 'alice', now())`,
			id.New(), r.URL.Query().Get("project"), commits.first)
		fail(w, err)
	})
	control.HandleFunc("GET /push", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fail(w, commits.commit("second page"))
	})
	// /dns creates a domain's CNAME record and runs the check the domains
	// worker would run next, which the open settings page must pick up.
	control.HandleFunc("GET /dns", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		dns.SetCNAME(name, edgeHost)
		var d uuid.UUID
		if fail(w, pool.QueryRow(t.Context(), `SELECT id FROM domains WHERE name = $1`, name).Scan(&d)) {
			return
		}
		_, err := domainSvc.Check(t.Context(), d)
		fail(w, err)
	})
	// /dns-gone deletes a domain's records and runs the recheck the domains
	// worker would run next; it answers the domain's status.
	control.HandleFunc("GET /dns-gone", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		dns.Delete(name)
		var d uuid.UUID
		if fail(w, pool.QueryRow(t.Context(), `SELECT id FROM domains WHERE name = $1`, name).Scan(&d)) {
			return
		}
		out, err := domainSvc.Check(t.Context(), d)
		if fail(w, err) {
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": out.Status, "failed_rechecks": out.FailedRechecks})
	})
	// /rollbacks counts the rollback tasks asked for a deployment.
	control.HandleFunc("GET /rollbacks", func(w http.ResponseWriter, r *http.Request) {
		var n int
		err := pool.QueryRow(t.Context(), `SELECT count(*) FROM river_job WHERE kind = 'rollback' AND args->>'deployment_id' = $1`, r.URL.Query().Get("deployment")).Scan(&n)
		if fail(w, err) {
			return
		}
		_ = json.NewEncoder(w).Encode(n)
	})
	// /plaintext counts the variables whose stored ciphertext holds value in the clear (none may).
	control.HandleFunc("GET /plaintext", func(w http.ResponseWriter, r *http.Request) {
		var n int
		err := pool.QueryRow(t.Context(), `SELECT count(*) FROM environment_variables WHERE position($1::bytea IN value_ciphertext) > 0`, []byte(r.URL.Query().Get("value"))).Scan(&n)
		if fail(w, err) {
			return
		}
		_ = json.NewEncoder(w).Encode(n)
	})
	ctl := httptest.NewServer(control)
	t.Cleanup(ctl.Close)

	shots := os.Getenv("ZEITWORK_WEB_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	cmd := nodeCmd(t, bin, "tests/browser.mjs")
	cmd.Env = append(cmd.Env, "BASE_URL="+srv.URL, "CONTROL_URL="+ctl.URL, "CHROMIUM="+chromium, "SCREENSHOTS="+shots)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("browser.mjs: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var got struct {
		FirstLoadScripts     int
		FirstLoadJSBytes     int
		FirstLoadJSGzipBytes int
		// Accessibility (axe-core violations by page) and cumulative
		// layout shift on first load, asserted by browser.mjs.
		Axe map[string]json.RawMessage
		CLS map[string]float64
		// What shifted on the deployment page, when anything did.
		CLSDeploymentSources []string
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("browser.mjs printed %q: %v", stdout.String(), err)
	}
	t.Logf("first load: %d scripts, %d bytes of JavaScript, %d gzipped (-9)", got.FirstLoadScripts, got.FirstLoadJSBytes, got.FirstLoadJSGzipBytes)
	t.Logf("cumulative layout shift on first load: %v (deployment page: %v)", got.CLS, got.CLSDeploymentSources)
	for page, r := range got.Axe {
		t.Logf("axe-core on %s: %s", page, r)
	}
	if len(got.Axe) < 8 || len(got.CLS) != 2 {
		t.Errorf("browser.mjs checked %d pages with axe-core and measured CLS on %d, want 8+ and 2", len(got.Axe), len(got.CLS))
	}
	if got.FirstLoadJSGzipBytes == 0 || got.FirstLoadJSGzipBytes > maxFirstLoadJS {
		t.Errorf("first-load JavaScript %d bytes gzipped; the budget is %d", got.FirstLoadJSGzipBytes, maxFirstLoadJS)
	}
}

const (
	appsDomain = "apps.zeitwork.test"
	edgeHost   = "edge.zeitwork.test"
)

// seed gives alice a project with a deployment of an uploaded archive,
// through the API with a token of hers, and returns their ids.
func seed(t *testing.T, base string, accounts account.Store, user func(string) (account.User, error)) (string, string, error) {
	alice, err := user("alice")
	if err != nil {
		return "", "", err
	}
	var p, d struct{ ID string }
	if err := post(t, base, accounts, alice, "/v1/projects", map[string]string{"name": "web-app"}, &p); err != nil {
		return "", "", err
	}
	if err := post(t, base, accounts, alice, "/v1/deployments", map[string]string{"project_id": p.ID, "archive_key": "uploads/" + p.ID + "/src.tar.gz"}, &d); err != nil {
		return "", "", err
	}
	return p.ID, d.ID, nil
}

// post calls the API as u with a fresh token of theirs and wants a 201.
func post(t *testing.T, base string, accounts account.Store, u account.User, path string, body, out any) error {
	tok, err := accounts.CreateToken(t.Context(), u.ID, "browser test")
	if err != nil {
		return err
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		var p bytes.Buffer
		_, _ = p.ReadFrom(res.Body)
		return fmt.Errorf("POST %s: %d %s", path, res.StatusCode, p.String())
	}
	return json.NewDecoder(res.Body).Decode(out)
}

// setState moves a deployment as the builder and the operator would:
// building; or active, with an image, on the project's hosts, the one
// there before retiring for its grace period.
func setState(ctx context.Context, pool *pgxpool.Pool, deployment, status string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var proj uuid.UUID
		if err := tx.QueryRow(ctx, `SELECT project_id FROM deployments WHERE id = $1`, deployment).Scan(&proj); err != nil {
			return fmt.Errorf("deployment %s: %w", deployment, err)
		}
		switch status {
		case "building":
			_, err := tx.Exec(ctx, `UPDATE deployments SET status = 'building', building_at = now() WHERE id = $1`, deployment)
			return err
		case "active":
			img := id.New()
			digest := fmt.Sprintf("sha256:%064x", img[:])
			if _, err := tx.Exec(ctx, `INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, $4, $5)`,
				img, proj, "registry.test/"+proj.String(), deployment, digest); err != nil {
				return fmt.Errorf("image: %w", err)
			}
			if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'retiring', retiring_at = now(), stop_at = now() + interval '5 minutes'
				WHERE project_id = $1 AND status = 'active' AND environment = 'production'`, proj); err != nil {
				return fmt.Errorf("retire: %w", err)
			}
			if _, err := tx.Exec(ctx, `UPDATE deployments SET status = 'active', active_at = now(), image_id = $2 WHERE id = $1`, deployment, img); err != nil {
				return fmt.Errorf("activate: %w", err)
			}
			_, err := tx.Exec(ctx, `UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, deployment, proj)
			return err
		}
		return fmt.Errorf("no such state %q", status)
	})
}

// repo is a git repository GitHub's emulator serves: its main branch
// with a first commit, and the second, made by commit.
type repo struct {
	dir, first, second string
	git                func(args ...string) (string, error)
}

func gitRepo(t *testing.T, dir string) *repo {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &repo{dir: dir}
	r.git = func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null",
			"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com", "GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("git %v: %w\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := r.git("init", "-q", "-b", "main"); err != nil {
		t.Fatal(err)
	}
	if err := r.commit("first page"); err != nil {
		t.Fatal(err)
	}
	r.first = r.second
	return r
}

// commit writes index.html and commits it with message.
func (r *repo) commit(message string) error {
	if err := os.WriteFile(filepath.Join(r.dir, "index.html"), []byte(message+"\n"), 0o644); err != nil {
		return err
	}
	if _, err := r.git("add", "."); err != nil {
		return err
	}
	if _, err := r.git("commit", "-q", "-m", message); err != nil {
		return err
	}
	head, err := r.git("rev-parse", "HEAD")
	r.second = head
	return err
}
