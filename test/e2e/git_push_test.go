package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
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

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// TestGitPushGoesLive: the whole way from GitHub to a live URL, on
// `zeitwork dev` as it runs for a developer, through the public API only.
// The browser signs in through the GitHub emulator's OAuth flow and
// installs the App through the API's install and setup redirects; the
// repository is found through the API's installation listing and a
// project created connected to it, which deploys the branch's head at
// once. Its build and runtime logs are read through the API (a page and a
// live stream). A git push reaches the API as GitHub's signed push webhook
// and switches the project's host to the new commit; a push to another
// branch deploys a preview that answers at its own host while production
// keeps the project's; deleting that branch stops the preview.
func TestGitPushGoesLive(t *testing.T) {
	p := startPlatform(t, 1, "RETIRE_GRACE=1s")
	began := time.Now()
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

	// Installing the App is four redirects: the api to the emulator's
	// install page, which (the App asking for user authorization during
	// installation) sends the browser to the sign-in callback with a code,
	// which forwards it to the setup, which records the installation and
	// goes on to next.
	var installations struct {
		Items []struct {
			ID           int64  `json:"id"`
			AccountLogin string `json:"account_login"`
			Suspended    bool   `json:"suspended"`
		} `json:"items"`
	}
	call(t, browser, "GET", api+"/v1/github/install?next=/v1/github/installations", "", 200, &installations)
	if len(installations.Items) != 1 || installations.Items[0].ID != githubemu.DevInstallationID ||
		installations.Items[0].AccountLogin != githubemu.DevLogin || installations.Items[0].Suspended {
		t.Fatalf("installations after installing: %+v, want the dev user's", installations.Items)
	}

	// The repository lives where the emulator serves repositories from, and
	// has its first commit before a project is connected to it.
	bare := filepath.Join(p.state, "github", "repos", "app.git")
	git(t, "", "init", "-q", "--bare", "-b", "main", bare)
	work := t.TempDir()
	git(t, "", "clone", "-q", bare, work)
	if err := os.WriteFile(filepath.Join(work, "app"), appBinary(t, p.archive), 0o755); err != nil {
		t.Fatal(err)
	}
	sha1 := commitAndPush(t, work, "main", "built from the first commit")
	fullName := githubemu.DevLogin + "/app"
	p.wait(30*time.Second, "the installation to see "+fullName, func() bool {
		var repos struct {
			Items []struct {
				ID            int64  `json:"id"`
				FullName      string `json:"full_name"`
				DefaultBranch string `json:"default_branch"`
			} `json:"items"`
		}
		call(t, browser, "GET", fmt.Sprintf("%s/v1/github/installations/%d/repositories", api, githubemu.DevInstallationID), "", 200, &repos)
		for _, r := range repos.Items {
			if r.FullName == fullName {
				if r.ID != githubemu.DevRepositoryID("app") || r.DefaultBranch != "main" {
					t.Fatalf("repository %+v: want id %d, default branch main", r, githubemu.DevRepositoryID("app"))
				}
				return true
			}
		}
		return false
	})

	// Creating the project connected to the repository deploys main's head.
	var proj struct {
		ID   uuid.UUID `json:"id"`
		Slug string    `json:"slug"`
	}
	created := time.Now()
	// Small enough for three instances on the one simulated node, given at
	// creation: the first deployment starts at once.
	call(t, browser, "POST", api+"/v1/projects",
		fmt.Sprintf(`{"name":"Pushed App","repository":{"installation_id":%d,"full_name":%q},"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`,
			githubemu.DevInstallationID, fullName), 201, &proj)
	// Dev gives the api its SECRETS_KEYS: variables can be set.
	var variable struct{}
	call(t, browser, "PUT", api+"/v1/projects/"+proj.ID.String()+"/env/NOTE", `{"value":"sealed"}`, 200, &variable)

	host := proj.Slug + ".zeitwork.localhost"
	first := p.waitLive(browser, api, proj.ID, sha1, "main", host, "built from the first commit", created)
	// The URL the api shows is the dev edge's, as a browser on this
	// machine reaches it.
	edge := fmt.Sprintf("http://%s:%d", host, p.base-18)
	if first.Environment != "production" || first.URL != edge {
		t.Errorf("first deployment %+v: want production at %s", first, edge)
	}
	if got := atURL(t, p, first.URL); !strings.HasSuffix(got, " built from the first commit") {
		t.Errorf("%s answers %q", first.URL, got)
	}
	setUp := time.Since(began)

	logsStart := time.Now()
	p.checkLogs(browser, api, first.ID)
	logsTook := time.Since(logsStart)

	pushed := time.Now()
	sha2 := commitAndPush(t, work, "main", "built from the second commit")
	second := p.waitLive(browser, api, proj.ID, sha2, "main", host, "built from the second commit", pushed)
	secondTook := time.Since(pushed)
	if first.ID == second.ID {
		t.Fatal("the second push made no new deployment")
	}
	// Each deployment answers at its own name too.
	own := second.ID.String() + ".zeitwork.localhost"
	p.wait(60*time.Second, own+" to answer", func() bool {
		return strings.HasSuffix(throughEdge(t, p, own), " built from the second commit")
	})

	// A push to another branch is a preview: its own host, production
	// untouched.
	pushed = time.Now()
	git(t, work, "checkout", "-q", "-b", "feature")
	sha3 := commitAndPush(t, work, "feature", "built from a feature branch")
	preview := p.waitActive(browser, api, proj.ID, sha3, "refs/heads/feature", "built from a feature branch")
	if preview.Environment != "preview" || preview.Branch != "feature" || preview.URL != fmt.Sprintf("http://%s.zeitwork.localhost:%d", preview.ID, p.base-18) {
		t.Fatalf("preview %+v: want environment preview, branch feature, url http://<its id>.zeitwork.localhost:<edge port>", preview)
	}
	p.wait(60*time.Second, preview.URL+" to answer with the feature branch", func() bool {
		return strings.HasSuffix(atURL(t, p, preview.URL), " built from a feature branch")
	})
	if got := throughEdge(t, p, host); !strings.HasSuffix(got, " built from the second commit") {
		t.Errorf("while a preview is live, %s answers %q, want the second commit", host, got)
	}
	previewTook := time.Since(pushed)

	// Deleting the branch stops its preview.
	pushed = time.Now()
	git(t, work, "push", "-q", "origin", "--delete", "feature")
	p.wait(60*time.Second, "the preview to stop", func() bool {
		var d deploymentJSON
		call(t, browser, "GET", api+"/v1/deployments/"+preview.ID.String(), "", 200, &d)
		return d.Status == "stopped" && atURL(t, p, preview.URL) == ""
	})
	stopTook := time.Since(pushed)
	if got := throughEdge(t, p, host); !strings.HasSuffix(got, " built from the second commit") {
		t.Errorf("after the preview stopped, %s answers %q, want the second commit", host, got)
	}

	// `zeitwork deploy ./dir` in dev: an archive sent straight to the dev
	// S3 with the policy the api signed, then deployed.
	uploaded := time.Now()
	p.uploadAndDeploy(browser, api)
	uploadTook := time.Since(uploaded)

	t.Logf("sign-in, install, project → first commit live: %s; logs read: %s; second push → live: %s; feature push → preview live: %s; branch deleted → preview stopped: %s; upload → live: %s; whole test after dev started: %s",
		setUp.Round(time.Millisecond), logsTook.Round(time.Millisecond), secondTook.Round(time.Millisecond),
		previewTook.Round(time.Millisecond), stopTook.Round(time.Millisecond), uploadTook.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// uploadAndDeploy creates a project without a repository, uploads the
// app's archive as the API says (a presigned POST to S3) and deploys it,
// waiting until its host answers through the edge.
func (p *platform) uploadAndDeploy(c *http.Client, api string) {
	t := p.t
	t.Helper()
	var proj struct {
		ID   uuid.UUID `json:"id"`
		Slug string    `json:"slug"`
	}
	call(t, c, "POST", api+"/v1/projects", `{"name":"Uploaded App"}`, 201, &proj)
	var patched struct {
		CPUMillis int `json:"cpu_millis"`
	}
	call(t, c, "PATCH", api+"/v1/projects/"+proj.ID.String(), `{"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`, 200, &patched)
	if patched.CPUMillis != 100 {
		t.Fatalf("patched project: cpu_millis %d, want 100", patched.CPUMillis)
	}
	var up struct {
		Key    string            `json:"key"`
		Method string            `json:"method"`
		URL    string            `json:"url"`
		Fields map[string]string `json:"fields"`
	}
	call(t, c, "POST", api+"/v1/projects/"+proj.ID.String()+"/uploads", "", 201, &up)
	if up.Method != "POST" || !strings.HasPrefix(up.Key, "uploads/"+proj.ID.String()+"/") {
		t.Fatalf("upload %+v: want a presigned POST under the project's prefix", up)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	for k, v := range up.Fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", "source.tar.gz")
	fw.Write(p.archive)
	mw.Close()
	resp, err := http.Post(up.URL, mw.FormDataContentType(), &form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", up.URL, resp.StatusCode, b)
	}
	var d deploymentJSON
	call(t, c, "POST", api+"/v1/deployments", fmt.Sprintf(`{"project_id":%q,"archive_key":%q}`, proj.ID, up.Key), 201, &d)
	p.wait(3*time.Minute, "the uploaded deployment to go active", func() bool {
		call(t, c, "GET", api+"/v1/deployments/"+d.ID.String(), "", 200, &d)
		if d.Status == "failed" {
			t.Fatalf("the uploaded deployment failed: %s", d.FailureReason)
		}
		return d.Status == "active"
	})
	host := proj.Slug + ".zeitwork.localhost"
	p.wait(60*time.Second, host+" to answer", func() bool {
		return throughEdge(t, p, host) != ""
	})
}

// checkLogs reads deployment's logs through the API: the build's as a
// page and as a live stream that replays them and ends (the build is
// over), and an instance's output, which the api fetches from the node
// API of the node it runs on.
func (p *platform) checkLogs(c *http.Client, api string, deployment uuid.UUID) {
	t := p.t
	t.Helper()
	logs := api + "/v1/deployments/" + deployment.String() + "/logs"
	type line struct {
		ID         string     `json:"id"`
		Source     string     `json:"source"`
		InstanceID *uuid.UUID `json:"instance_id"`
		Text       string     `json:"text"`
	}
	var page struct {
		Items   []line `json:"items"`
		Missing []any  `json:"missing"`
	}
	call(t, c, "GET", logs+"?source=build&limit=5000", "", 200, &page)
	if len(page.Items) == 0 {
		t.Fatal("the build log is empty")
	}
	for _, l := range page.Items {
		if l.Source != "build" {
			t.Fatalf("a %s line in the build log: %+v", l.Source, l)
		}
	}

	// The stream of a finished build: every line again, then its end.
	req, _ := http.NewRequest("GET", logs+"?source=build", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Jar: c.Jar, Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("the build log stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := map[string]int{}
	var end string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event := ""
	for sc.Scan() {
		switch l := sc.Text(); {
		case strings.HasPrefix(l, "event: "):
			event = strings.TrimPrefix(l, "event: ")
			events[event]++
		case strings.HasPrefix(l, "data: ") && event == "end":
			end = strings.TrimPrefix(l, "data: ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("the build log stream did not end: %v (events so far %v)", err, events)
	}
	if events["line"] != len(page.Items) || events["end"] != 1 || !strings.Contains(end, "active") {
		t.Fatalf("the build log stream sent %v ending with %q: want %d lines and an end saying active", events, end, len(page.Items))
	}

	// The app says where it listens when it starts.
	p.wait(60*time.Second, "the app's output in the runtime log", func() bool {
		var page struct {
			Items   []line `json:"items"`
			Missing []any  `json:"missing"`
		}
		call(t, c, "GET", logs+"?source=runtime", "", 200, &page)
		if len(page.Missing) > 0 {
			t.Fatalf("the node API did not answer: %v", page.Missing)
		}
		for _, l := range page.Items {
			if l.Source == "runtime" && l.InstanceID != nil && strings.Contains(l.Text, "listening on port 8080") {
				return true
			}
		}
		return false
	})
	// The live stream of a running deployment does not end: it sends the
	// instances' output the node APIs replay, and the client cuts it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", logs+"?source=runtime", nil)
	req.Header.Set("Accept", "text/event-stream")
	live, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	sc = bufio.NewScanner(live.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") && strings.Contains(l, "listening on port 8080") {
			cancel()
			return
		}
	}
	t.Fatalf("the runtime log stream ended without the app's output: %v", sc.Err())
}

// deploymentJSON is the API's deployment, the fields this test reads.
type deploymentJSON struct {
	ID            uuid.UUID  `json:"id"`
	Status        string     `json:"status"`
	FailureReason string     `json:"failure_reason"`
	CommitSHA     string     `json:"commit_sha"`
	CommitMessage string     `json:"commit_message"`
	Ref           string     `json:"ref"`
	Environment   string     `json:"environment"`
	Branch        string     `json:"branch"`
	URL           string     `json:"url"`
	CreatedAt     time.Time  `json:"created_at"`
	ActiveAt      *time.Time `json:"active_at"`
}

// commitAndPush commits a Dockerfile that makes the app say greeting and
// pushes it to branch, returning the commit.
func commitAndPush(t *testing.T, work, branch, greeting string) string {
	t.Helper()
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY app /app\nENV GREETING=%q\nENTRYPOINT [\"/app\"]\n", greeting)
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", ".")
	git(t, work, "-c", "user.name=Dev", "-c", "user.email=dev@zeitwork.localhost", "commit", "-q", "-m", greeting)
	sha := strings.TrimSpace(git(t, work, "rev-parse", "HEAD"))
	git(t, work, "push", "-q", "origin", branch)
	return sha
}

// waitActive waits until the API shows the deployment of sha from ref
// active, failing the test if it fails.
func (p *platform) waitActive(c *http.Client, api string, project uuid.UUID, sha, ref, message string) deploymentJSON {
	t := p.t
	t.Helper()
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
	if d.Ref != ref || d.CommitMessage != message {
		t.Errorf("deployment %+v: want ref %s and message %q", d, ref, message)
	}
	return d
}

// waitLive waits until the deployment of sha is active and the project's
// host answers with greeting through the edge.
func (p *platform) waitLive(c *http.Client, api string, project uuid.UUID, sha, branch, host, greeting string, start time.Time) deploymentJSON {
	t := p.t
	t.Helper()
	d := p.waitActive(c, api, project, sha, "refs/heads/"+branch, greeting)
	p.wait(60*time.Second, host+" to answer with "+greeting, func() bool {
		return strings.HasSuffix(throughEdge(t, p, host), " "+greeting)
	})
	t.Logf("%s: → deployment %s, → active %s, → the edge answering %s", sha[:7],
		d.CreatedAt.Sub(start).Round(time.Millisecond), d.ActiveAt.Sub(d.CreatedAt).Round(time.Millisecond), time.Since(*d.ActiveAt).Round(time.Millisecond))
	return d
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

// atURL is what the dev edge answers for rawURL, a URL the api showed,
// "" when not a 200. It goes to the edge's loopback address: *.localhost
// is this machine to a browser, not to every resolver.
func atURL(t *testing.T, p *platform, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("%s: %v", rawURL, err)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", p.base-18), nil)
	req.Host = u.Host // with the port, as a browser sends it
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
