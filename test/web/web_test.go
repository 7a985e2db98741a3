// Package web checks the dashboard (packages/web): its API types are
// generated from the current OpenAPI document, and it works in a real
// browser against the real API. It needs Node 22 (scripts/node22.sh),
// `npm ci` and `npm run build` in packages/web, and Debian's chromium;
// scripts/test prepares them. Without them the tests skip, and fail under
// CI=true.
package web

import (
	"bytes"
	"encoding/json"
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

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
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

// maxFirstLoadJS is the budget for the JavaScript a first visit loads
// (gzip), from the issue: a dashboard that opens fast on a slow link.
const maxFirstLoadJS = 300 << 10

// TestDashboardInABrowser signs in through the GitHub emulator in headless
// chromium and walks the pages: sign-in, projects (empty, then with a
// deployment's state), a project, a deployment's build log streaming live
// with ANSI colours and an auto-scroll that stops when the user scrolls up,
// the waitlist, the admin admitting a waiting user, and a stranger who
// cannot see another user's project.
// packages/web/tests/browser.mjs holds the steps; this test runs the API
// and the hooks the steps call to change the world between them.
func TestDashboardInABrowser(t *testing.T) {
	bin := node(t)
	bundle, err := filepath.Abs(filepath.Join(pkg, ".output/public"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "index.html")); err != nil {
		testenv.Unavailable(t, "the built dashboard (npm run build in packages/web)", err)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium (apt-get install chromium; scripts/deps.sh install)", err)
	}

	pool := testdb.New(t)
	log := zlog.Discard()
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	emu := githubemu.New(githubemu.App{ID: 1, Slug: "zeitwork", ClientID: "Iv1.web", ClientSecret: "shh", CallbackURL: srv.URL + "/v1/auth/github/callback"})
	gh, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	for i, login := range []string{"alice", "bob"} {
		emu.AddUser(githubemu.User{ID: int64(100 + i), Login: login, Name: login, Emails: []githubemu.Email{{Email: login + "@example.com", Primary: true, Verified: true}}})
	}
	accounts := account.Store{DB: pool}
	a := &api.API{
		Accounts: accounts, Projects: project.Store{DB: pool}, Log: log, Dev: true, // http://127.0.0.1
		Deploys: api.Deploys{DB: pool, Queue: q, AppsDomain: "apps.zeitwork.test"},
		GitHub:  &api.GitHubSignIn{ClientID: "Iv1.web", ClientSecret: "shh", WebURL: gh.APIURL, APIURL: gh.APIURL},
		Logs:    api.Logs{Reader: &logs.Reader{Pool: pool, Poll: 100 * time.Millisecond, Log: log}},
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
	writeLines := func(lines ...string) error {
		mu.Lock()
		defer mu.Unlock()
		w := buildlog.NewWriter(pool, build, buildlog.DefaultLimits, log)
		for _, l := range lines {
			w.Line(buildlog.Stdout, "%s", l)
		}
		return w.Close(t.Context())
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
			err = writeLines("step 1/2: installing", "\x1b[31merror text in red\x1b[0m and plain")
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
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
		if err := writeLines(lines...); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
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
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("browser.mjs printed %q: %v", stdout.String(), err)
	}
	t.Logf("first load: %d scripts, %d bytes of JavaScript, %d gzipped (-9)", got.FirstLoadScripts, got.FirstLoadJSBytes, got.FirstLoadJSGzipBytes)
	if got.FirstLoadJSGzipBytes == 0 || got.FirstLoadJSGzipBytes > maxFirstLoadJS {
		t.Errorf("first-load JavaScript %d bytes gzipped; the budget is %d", got.FirstLoadJSGzipBytes, maxFirstLoadJS)
	}
}

// seed gives alice a project with a deployment of an uploaded archive,
// through the API with a token of hers, and returns their ids.
func seed(t *testing.T, base string, accounts account.Store, user func(string) (account.User, error)) (string, string, error) {
	alice, err := user("alice")
	if err != nil {
		return "", "", err
	}
	tok, err := accounts.CreateToken(t.Context(), alice.ID, "browser test")
	if err != nil {
		return "", "", err
	}
	call := func(path string, body any, out any) error {
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
	var p, d struct{ ID string }
	if err := call("/v1/projects", map[string]string{"name": "web-app"}, &p); err != nil {
		return "", "", err
	}
	if err := call("/v1/deployments", map[string]string{"project_id": p.ID, "archive_key": "uploads/" + p.ID + "/src.tar.gz"}, &d); err != nil {
		return "", "", err
	}
	return p.ID, d.ID, nil
}
