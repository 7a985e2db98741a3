package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
)

// TestUserFlows: what a user does after the first push, on one `zeitwork
// dev`, through the API, the CLI (run in-process) and the edge only. The
// grace period is long enough that a rollback right after a deploy finds
// the replaced deployment still running.
//
//   - a push under constant load through the edge: the new commit answers,
//     no request fails, and the replaced instances stop only once the
//     grace period is over;
//   - a push whose build fails leaves the live deployment serving and
//     shows why, in the deployment and its build log, through the API and
//     `zeitwork logs --build`;
//   - `zeitwork deploy ./dir` prints a URL that serves the directory;
//   - a variable set with `zeitwork env set` reaches the next deployment
//     and appears in no log: not the build's, not the instances', not the
//     platform's own output;
//   - `zeitwork rollback` right after that deploy brings the previous
//     version back under constant load without one failed request.
func TestUserFlows(t *testing.T) {
	const grace = 20 * time.Second
	// Debug logs: the variable must not appear even there.
	p := startPlatform(t, 1, "RETIRE_GRACE="+grace.String(), "LOG_LEVEL=debug")
	s := p.signIn()

	// A project connected to a repository, its first commit live.
	bare := filepath.Join(p.state, "github", "repos", "flows.git")
	git(t, "", "init", "-q", "--bare", "-b", "main", bare)
	work := t.TempDir()
	git(t, "", "clone", "-q", bare, work)
	if err := os.WriteFile(filepath.Join(work, "app"), appBinary(t, p.archive), 0o755); err != nil {
		t.Fatal(err)
	}
	sha1 := commitAndPush(t, work, "main", "version one")
	fullName := githubemu.DevLogin + "/flows"
	p.wait(30*time.Second, "the installation to see "+fullName, func() bool {
		var repos struct {
			Items []struct {
				FullName string `json:"full_name"`
			} `json:"items"`
		}
		call(t, s.browser, "GET", fmt.Sprintf("%s/v1/github/installations/%d/repositories", s.api, githubemu.DevInstallationID), "", 200, &repos)
		for _, r := range repos.Items {
			if r.FullName == fullName {
				return true
			}
		}
		return false
	})
	var proj projectJSON
	created := time.Now()
	call(t, s.browser, "POST", s.api+"/v1/projects",
		fmt.Sprintf(`{"name":"Flows","repository":{"installation_id":%d,"full_name":%q},"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`,
			githubemu.DevInstallationID, fullName), 201, &proj)
	host := proj.Slug + ".zeitwork.localhost"
	d1 := p.waitLive(s.browser, s.api, proj.ID, sha1, "main", host, "version one", created)

	var d2 deploymentJSON
	if !t.Run("push under load", func(t *testing.T) {
		l := p.loadOn(t, host)
		pushed := time.Now()
		sha2 := commitAndPush(t, work, "main", "version two")
		d2 = p.waitLive(s.browser, s.api, proj.ID, sha2, "main", host, "version two", pushed)
		p.wait(grace+90*time.Second, "the replaced deployment to stop", func() bool {
			var d deploymentJSON
			call(t, s.browser, "GET", s.api+"/v1/deployments/"+d1.ID.String(), "", 200, &d)
			return d.Status == "stopped"
		})
		// The deployment stops as the operator decides; its instances as
		// the agent carries that out.
		ctx := context.Background()
		p.wait(60*time.Second, "the replaced deployment's instances to stop", func() bool {
			var n int
			p.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state <> 'stopped'`, d1.ID).Scan(&n)
			return n == 0
		})
		answers := l.stop()
		// The grace period is the operator's promise: measured on the
		// platform's own clock, the first instance to stop did so after it.
		var retiringAt, stopAt, firstStopped *time.Time
		var live int
		if err := p.pool.QueryRow(ctx, `SELECT retiring_at, stop_at FROM deployments WHERE id = $1`, d1.ID).Scan(&retiringAt, &stopAt); err != nil {
			t.Fatal(err)
		}
		if err := p.pool.QueryRow(ctx, `SELECT min(stopped_at), count(*) FILTER (WHERE state <> 'stopped') FROM instances WHERE deployment_id = $1`, d1.ID).Scan(&firstStopped, &live); err != nil {
			t.Fatal(err)
		}
		if retiringAt == nil || stopAt == nil || stopAt.Sub(*retiringAt) < grace-time.Second {
			t.Errorf("the replaced deployment retired at %v to stop at %v: want a grace of %s", retiringAt, stopAt, grace)
		}
		if firstStopped == nil || firstStopped.Before(*stopAt) || live != 0 {
			t.Errorf("the replaced deployment's instances: first stopped at %v (grace over at %v), %d not stopped", firstStopped, stopAt, live)
		}
		if answers["version one"] == 0 || answers["version two"] == 0 {
			t.Errorf("the load saw %v: want answers from both commits", answers)
		}
		t.Logf("through the edge during the push and the grace period: %v, 0 failed", answers)
	}) {
		return
	}

	t.Run("broken push", func(t *testing.T) {
		// The app's own binary as a RUN step that exits 3: a failing build
		// step with output of its own, no shell or base image needed.
		sha := pushDockerfile(t, work, "main", "FROM scratch\nCOPY app /app\nENV EXIT_CODE=3\nRUN [\"/app\"]\nENTRYPOINT [\"/app\"]\n", "a broken build")
		var broken deploymentJSON
		p.wait(3*time.Minute, "the broken build to fail", func() bool {
			broken = s.deploymentOf(proj.ID, sha)
			if broken.Status == "active" {
				t.Fatalf("the broken build went active: %+v", broken)
			}
			return broken.Status == "failed"
		})
		if !strings.HasPrefix(broken.FailureReason, "build failed: ") || strings.Count(broken.FailureReason, "build failed") != 1 || !strings.Contains(broken.FailureReason, "exit code: 3") {
			t.Errorf("failure reason %q: want the build's failure with the step's exit code", broken.FailureReason)
		}
		t.Logf("the broken push's deployment failed: %s", broken.FailureReason)
		var after projectJSON
		call(t, s.browser, "GET", s.api+"/v1/projects/"+proj.ID.String(), "", 200, &after)
		if after.ActiveDeploymentID != d2.ID {
			t.Errorf("after the broken build the project routes to %s, want %s", after.ActiveDeploymentID, d2.ID)
		}
		if got := throughEdge(t, p, host); !strings.HasSuffix(got, " version two") {
			t.Errorf("after the broken build %s answers %q, want version two", host, got)
		}

		// The build log says what the step printed and why the build failed.
		var page struct {
			Items []struct {
				Text string `json:"text"`
			} `json:"items"`
		}
		call(t, s.browser, "GET", s.api+"/v1/deployments/"+broken.ID.String()+"/logs?source=build&limit=5000", "", 200, &page)
		var apiLog strings.Builder
		for _, l := range page.Items {
			apiLog.WriteString(l.Text + "\n")
		}
		for _, want := range []string{"exiting at once with 3", broken.FailureReason} {
			if !strings.Contains(apiLog.String(), want) {
				t.Errorf("the build log through the API lacks %q:\n%s", want, apiLog.String())
			}
		}
		code, out, errOut := s.cli(work, "logs", "--build", "--project", proj.Slug, broken.ID.String())
		if code != cli.ExitOK {
			t.Fatalf("zeitwork logs --build: exit %d\n%s\n%s", code, out, errOut)
		}
		for _, want := range []string{"exiting at once with 3", broken.FailureReason} {
			if !strings.Contains(out, want) {
				t.Errorf("zeitwork logs --build lacks %q:\n%s", want, out)
			}
		}
	})

	// A directory deployed from the CLI, to a project the CLI created.
	parent := t.TempDir()
	dir := filepath.Join(parent, "site")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), appBinary(t, p.archive), 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY app /app\nENV GREETING=\"from the directory\"\nENTRYPOINT [\"/app\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	var site projectJSON
	s.cliJSON(&site, dir, "projects", "create", "Site", "--link")
	call(t, s.browser, "PATCH", s.api+"/v1/projects/"+site.ID.String(), `{"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`, 200, &struct{}{})
	siteHost := site.Slug + ".zeitwork.localhost"
	var siteURL string
	if !t.Run("deploy a directory", func(t *testing.T) {
		// From the directory above it, as `zeitwork deploy ./site`: the
		// directory's own link names the project.
		code, out, errOut := s.cli(parent, "deploy", "./site")
		if code != cli.ExitOK {
			t.Fatalf("zeitwork deploy ./site: exit %d\n%s\n%s", code, out, errOut)
		}
		siteURL = strings.TrimSpace(out)
		if want := fmt.Sprintf("http://%s:%d", siteHost, p.base-18); siteURL != want {
			t.Fatalf("zeitwork deploy printed %q, want %s\nstderr:\n%s", out, want, errOut)
		}
		// The CLI prints the URL once the API says active; the edge learns
		// the route from a NOTIFY of the same commit, a moment later (in
		// CI under load, once, after the first request had its 404).
		printed := time.Now()
		p.wait(10*time.Second, siteURL+" to answer with the directory's greeting", func() bool {
			return strings.HasSuffix(atURL(t, p, siteURL), " from the directory")
		})
		t.Logf("%s answered %s after deploy printed it", siteURL, time.Since(printed).Round(time.Millisecond))
	}) {
		return
	}

	t.Run("env and rollback", func(t *testing.T) {
		secret := "zw-e2e-" + id.New().String()
		code, out, errOut := s.cli(dir, "env", "set", "GREETING="+secret)
		if code != cli.ExitOK {
			t.Fatalf("zeitwork env set: exit %d\n%s\n%s", code, out, errOut)
		}
		cliOut := out + errOut

		l := p.loadOn(t, siteHost)
		code, out, errOut = s.cli(dir, "deploy")
		cliOut += out + errOut
		if code != cli.ExitOK || strings.TrimSpace(out) != siteURL {
			t.Fatalf("zeitwork deploy: exit %d, printed %q (want %s)\n%s", code, out, siteURL, errOut)
		}
		p.wait(60*time.Second, siteHost+" to answer with the variable", func() bool {
			return strings.HasSuffix(throughEdge(t, p, siteHost), " "+secret)
		})
		var newest []deploymentJSON
		s.cliJSON(&newest, dir, "deployments", "-n", "1")
		if len(newest) != 1 || newest[0].Status != "active" {
			t.Fatalf("zeitwork deployments -n 1: %+v, want the active deployment", newest)
		}
		withVar := newest[0]

		rolled := time.Now()
		code, out, errOut = s.cli(dir, "rollback")
		cliOut += out + errOut
		if code != cli.ExitOK || !strings.Contains(out, "Rolling back to ") {
			t.Fatalf("zeitwork rollback: exit %d\n%s\n%s", code, out, errOut)
		}
		p.wait(60*time.Second, siteHost+" to answer with the previous version", func() bool {
			return strings.HasSuffix(throughEdge(t, p, siteHost), " from the directory")
		})
		back := time.Since(rolled)
		answers := l.stop()
		if answers[secret] == 0 || answers["from the directory"] == 0 {
			t.Errorf("the load saw %d answers with the variable, %d from the previous version: want both", answers[secret], answers["from the directory"])
		}
		t.Logf("rollback → the previous version answering through the edge: %s; through the edge: %d answers with the variable, %d from the directory, 0 failed",
			back.Round(time.Millisecond), answers[secret], answers["from the directory"])

		// The value reached the app; no log holds it.
		logs := map[string]string{"the CLI's output": cliOut}
		for _, source := range []string{"build", "runtime"} {
			var page struct {
				Items []struct {
					Text string `json:"text"`
				} `json:"items"`
			}
			call(t, s.browser, "GET", s.api+"/v1/deployments/"+withVar.ID.String()+"/logs?source="+source+"&limit=5000", "", 200, &page)
			if len(page.Items) == 0 {
				t.Errorf("the %s log of %s is empty", source, withVar.ID)
			}
			var b strings.Builder
			for _, l := range page.Items {
				b.WriteString(l.Text + "\n")
			}
			logs["the "+source+" log through the API"] = b.String()
		}
		code, out, errOut = s.cli(dir, "logs", withVar.ID.String())
		if code != cli.ExitOK {
			t.Fatalf("zeitwork logs: exit %d\n%s\n%s", code, out, errOut)
		}
		logs["zeitwork logs"] = out + errOut
		logs["the platform's stdout"] = p.out.String()
		logs["the platform's stderr"] = p.errOut.String()
		sizes := map[string]int{}
		for name, text := range logs {
			sizes[name] = len(text)
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the variable's value", name)
			}
		}
		if !strings.Contains(logs["the platform's stderr"], "level=DEBUG") {
			t.Errorf("the platform logged nothing at debug level: the search for the value proves less than it should")
		}
		t.Logf("the variable's value is in none of these (bytes searched): %v", sizes)
		if !strings.Contains(logs["zeitwork logs"], "listening on port 8080") {
			t.Errorf("zeitwork logs shows no output of the instances:\n%s", logs["zeitwork logs"])
		}
	})
}

// projectJSON is the API's project, the fields these tests read.
type projectJSON struct {
	ID                 uuid.UUID `json:"id"`
	Slug               string    `json:"slug"`
	ActiveDeploymentID uuid.UUID `json:"active_deployment_id"`
}

// session is the dev user signed in: a browser with the session cookie,
// an API token for the CLI, and the CLI's own config home.
type session struct {
	p       *platform
	api     string
	browser *http.Client
	token   string
	config  string
}

// signIn signs the dev user in through the GitHub emulator, installs the
// App, and mints an API token for the CLI.
func (p *platform) signIn() *session {
	t := p.t
	t.Helper()
	s := &session{p: p, api: fmt.Sprintf("http://localhost:%d", p.base-20), config: t.TempDir()}
	p.wait(60*time.Second, "the api to serve", func() bool {
		resp, err := http.Get(s.api + "/v1/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	jar, _ := cookiejar.New(nil)
	s.browser = &http.Client{Jar: jar, Timeout: 30 * time.Second}
	var me struct {
		Username string `json:"username"`
	}
	call(t, s.browser, "GET", s.api+"/v1/auth/github?next=/v1/me", "", 200, &me)
	if me.Username != githubemu.DevLogin {
		t.Fatalf("signed in as %q, want %s", me.Username, githubemu.DevLogin)
	}
	var installations struct {
		Items []struct {
			ID int64 `json:"id"`
		} `json:"items"`
	}
	call(t, s.browser, "GET", s.api+"/v1/github/install?next=/v1/github/installations", "", 200, &installations)
	if len(installations.Items) != 1 {
		t.Fatalf("installations after installing: %+v", installations.Items)
	}
	var tok struct {
		Token string `json:"token"`
	}
	call(t, s.browser, "POST", s.api+"/v1/tokens", `{"name":"e2e CLI"}`, 201, &tok)
	s.token = tok.Token
	return s
}

// cli runs a user command in-process, as if in dir, with the session's
// token and the dev API.
func (s *session) cli(dir string, args ...string) (code int, stdout, stderr string) {
	s.p.t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{args[0], "-C", dir}, append(args[1:], "--api", s.api)...)
	code = cli.Main(context.Background(), args, cli.Env{
		Environ: []string{"XDG_CONFIG_HOME=" + s.config, "ZEITWORK_TOKEN=" + s.token, "NO_COLOR=1"},
		Stdout:  &out, Stderr: &errOut,
	})
	return code, out.String(), errOut.String()
}

// cliJSON runs a user command that must succeed with --json and decodes
// its output into v.
func (s *session) cliJSON(v any, dir string, args ...string) {
	t := s.p.t
	t.Helper()
	code, out, errOut := s.cli(dir, append(args, "--json")...)
	if code != cli.ExitOK {
		t.Fatalf("zeitwork %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("zeitwork %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// deploymentOf is the project's deployment of sha, the zero value while
// there is none.
func (s *session) deploymentOf(project uuid.UUID, sha string) deploymentJSON {
	s.p.t.Helper()
	var page struct {
		Items []deploymentJSON `json:"items"`
	}
	call(s.p.t, s.browser, "GET", s.api+"/v1/deployments?limit=100&project_id="+project.String(), "", 200, &page)
	for _, d := range page.Items {
		if d.CommitSHA == sha {
			return d
		}
	}
	return deploymentJSON{}
}

// pushDockerfile commits dockerfile as the repository's Dockerfile and
// pushes it to branch, returning the commit.
func pushDockerfile(t *testing.T, work, branch, dockerfile, message string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", ".")
	git(t, work, "-c", "user.name=Dev", "-c", "user.email=dev@zeitwork.localhost", "commit", "-q", "-m", message)
	sha := strings.TrimSpace(git(t, work, "rev-parse", "HEAD"))
	git(t, work, "push", "-q", "origin", branch)
	return sha
}

// edgeLoad is clients sending keep-alive GETs to a host through the dev
// edge without pause, counting the answers by what the app says after
// its address, and every request that failed.
type edgeLoad struct {
	t       *testing.T
	stopped chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	answers map[string]int
	failed  []string
}

func (p *platform) loadOn(t *testing.T, host string) *edgeLoad {
	t.Helper()
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", p.base-18)
	get := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", edgeURL, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	p.wait(30*time.Second, "the edge to route "+host, func() bool {
		code, _, err := get(&http.Client{Timeout: 10 * time.Second})
		return err == nil && code == 200
	})
	l := &edgeLoad{t: t, stopped: make(chan struct{}), done: make(chan struct{}), answers: map[string]int{}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			// One connection per client, kept alive across requests.
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-l.stopped:
					return
				default:
				}
				code, body, err := get(c)
				l.mu.Lock()
				if err != nil || code/100 != 2 {
					l.failed = append(l.failed, fmt.Sprintf("%d %q %v", code, body, err))
				} else {
					_, said, _ := strings.Cut(body, " ")
					l.answers[said]++
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// stop ends the load, fails the test if any request failed, and returns
// how often each answer came.
func (l *edgeLoad) stop() map[string]int {
	l.t.Helper()
	close(l.stopped)
	<-l.done
	if len(l.failed) > 0 {
		l.t.Fatalf("%d requests through the edge failed; first: %s", len(l.failed), l.failed[0])
	}
	return l.answers
}
