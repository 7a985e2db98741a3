package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
)

// TestGitPushGoesLive: the whole way from GitHub to a live URL, on
// `zeitwork dev` as it runs for a developer. The browser's sign-in goes
// through the GitHub emulator's OAuth flow, a project is created through
// the API and connected to a repository of the emulator's, and a git push
// into that repository reaches the API as GitHub's signed push webhook:
// the commit is fetched from the emulator as a tarball, built, deployed and
// answers through the edge with what the commit says. A second push
// switches the URL to the second commit.
//
// The API to connect a repository is not used: the installation row and
// the project's repository are written here, as that API would.
func TestGitPushGoesLive(t *testing.T) {
	p := startPlatform(t, 1, "RETIRE_GRACE=1s")
	ctx := context.Background()
	api := fmt.Sprintf("http://localhost:%d", p.base-20)
	p.wait(60*time.Second, "the api to serve", func() bool {
		resp, err := http.Get(api + "/v1/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	// Signing in is three redirects: the api to the emulator's authorize
	// page, which approves at once as the dev user and sends the browser to
	// the api's callback, which sets the session and goes on to next.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	var me struct {
		ID       uuid.UUID `json:"id"`
		Username string    `json:"username"`
		Admitted bool      `json:"admitted"`
	}
	signIn := api + "/v1/auth/github?next=/v1/me"
	if !strings.Contains(p.out.String(), "Sign in: "+signIn+"\n") {
		t.Errorf("dev does not print the sign-in URL %s:\n%s", signIn, p.out.String())
	}
	call(t, browser, "GET", signIn, "", 200, &me)
	if me.Username != githubemu.DevLogin || !me.Admitted {
		t.Fatalf("signed in as %+v, want %s, admitted (the first user)", me, githubemu.DevLogin)
	}

	var proj struct {
		ID             uuid.UUID `json:"id"`
		Slug           string    `json:"slug"`
		OrganisationID uuid.UUID `json:"organisation_id"`
	}
	call(t, browser, "POST", api+"/v1/projects", `{"name":"Pushed App"}`, 201, &proj)
	// Dev gives the api its SECRETS_KEYS: variables can be set.
	var variable struct{}
	call(t, browser, "PUT", api+"/v1/projects/"+proj.ID.String()+"/env/NOTE", `{"value":"sealed"}`, 200, &variable)
	// Small enough for three instances on the one simulated node.
	if _, err := p.pool.Exec(ctx, `UPDATE projects SET cpu_millis = 100, memory_mb = 64, health_check_path = '/healthz' WHERE id = $1`, proj.ID); err != nil {
		t.Fatal(err)
	}

	// The repository lives where the emulator serves repositories from.
	bare := filepath.Join(p.state, "github", "repos", "app.git")
	git(t, "", "init", "-q", "--bare", "-b", "main", bare)
	inst, err := p.q.GithubInstallationUpsert(ctx, db.GithubInstallationUpsertParams{
		ID: id.New(), GithubInstallationID: githubemu.DevInstallationID, OrganisationID: proj.OrganisationID,
		AccountLogin: githubemu.DevLogin, AccountType: "User",
	})
	if err != nil {
		t.Fatal(err)
	}
	repoID, fullName := githubemu.DevRepositoryID("app"), githubemu.DevLogin+"/app"
	if _, err := p.q.ProjectSetRepository(ctx, db.ProjectSetRepositoryParams{
		ID: proj.ID, GithubInstallationID: &inst.ID, GithubRepositoryID: &repoID, GithubRepositoryFullName: &fullName,
	}); err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	git(t, "", "clone", "-q", bare, work)
	if err := os.WriteFile(filepath.Join(work, "app"), appBinary(t, p.archive), 0o755); err != nil {
		t.Fatal(err)
	}
	host := proj.Slug + ".zeitwork.localhost"
	first, firstTook := p.pushAndWait(browser, api, proj.ID, work, host, "built from the first commit")
	second, secondTook := p.pushAndWait(browser, api, proj.ID, work, host, "built from the second commit")
	t.Logf("pushed → active → answering through the edge: %s for the first commit, %s for the second",
		firstTook.Round(time.Millisecond), secondTook.Round(time.Millisecond))
	if first.ID == second.ID {
		t.Fatal("the second push made no new deployment")
	}
	// Each deployment answers at its own name too.
	own := second.ID.String() + ".zeitwork.localhost"
	p.wait(60*time.Second, own+" to answer", func() bool {
		return strings.HasSuffix(throughEdge(t, p, own), " built from the second commit")
	})
}

// deploymentJSON is the API's deployment, the fields this test reads.
type deploymentJSON struct {
	ID            uuid.UUID  `json:"id"`
	Status        string     `json:"status"`
	FailureReason string     `json:"failure_reason"`
	CommitSHA     string     `json:"commit_sha"`
	CommitMessage string     `json:"commit_message"`
	Ref           string     `json:"ref"`
	CreatedAt     time.Time  `json:"created_at"`
	ActiveAt      *time.Time `json:"active_at"`
}

// pushAndWait commits a Dockerfile that makes the app say greeting, pushes
// it, and waits until the API shows the commit's deployment active and the
// project's host answers with greeting through the edge.
func (p *platform) pushAndWait(c *http.Client, api string, project uuid.UUID, work, host, greeting string) (deploymentJSON, time.Duration) {
	t := p.t
	t.Helper()
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY app /app\nENV GREETING=%q\nENTRYPOINT [\"/app\"]\n", greeting)
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", ".")
	git(t, work, "-c", "user.name=Dev", "-c", "user.email=dev@zeitwork.localhost", "commit", "-q", "-m", greeting)
	sha := strings.TrimSpace(git(t, work, "rev-parse", "HEAD"))
	git(t, work, "push", "-q", "origin", "main")
	start := time.Now()

	var d deploymentJSON
	p.wait(3*time.Minute, "the deployment of "+sha[:7]+" to go active", func() bool {
		var page struct {
			Items []deploymentJSON `json:"items"`
		}
		call(t, c, "GET", api+"/v1/deployments?limit=100&project_id="+project.String(), "", 200, &page)
		for _, it := range page.Items {
			if it.CommitSHA != sha {
				continue
			}
			if it.Status == "failed" {
				t.Fatalf("deployment of %s failed: %s", sha, it.FailureReason)
			}
			d = it
		}
		return d.Status == "active"
	})
	if d.Ref != "refs/heads/main" || d.CommitMessage != greeting {
		t.Errorf("deployment %+v: want ref refs/heads/main and message %q", d, greeting)
	}
	p.wait(60*time.Second, host+" to answer with "+greeting, func() bool {
		return strings.HasSuffix(throughEdge(t, p, host), " "+greeting)
	})
	t.Logf("%s: pushed → deployment %s (the emulator's poll and the webhook), → active %s, → the edge answering %s", sha[:7],
		d.CreatedAt.Sub(start).Round(time.Millisecond), d.ActiveAt.Sub(d.CreatedAt).Round(time.Millisecond), time.Since(*d.ActiveAt).Round(time.Millisecond))
	return d, time.Since(start)
}

// throughEdge is what the dev edge answers for host, "" when not a 200.
func throughEdge(t *testing.T, p *platform, host string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", p.base-18), nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

// call sends a JSON request and decodes the answer into out, failing the
// test on any status but want.
func call(t *testing.T, c *http.Client, method, u, body string, want int, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		loc, _ := url.PathUnescape(resp.Request.URL.String())
		t.Fatalf("%s %s (ended at %s): %d %s", method, u, loc, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %v: %s", method, u, err, b)
	}
}

// appBinary takes the prebuilt app out of the archive the platform uploads.
func appBinary(t *testing.T, archive []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no app in the archive: %v", err)
		}
		if h.Name == "./app" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
