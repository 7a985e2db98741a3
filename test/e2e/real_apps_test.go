package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// realApp is a repository under testdata/apps that the detector builds
// without a Dockerfile, and what its home page must say.
type realApp struct {
	dir       string
	framework string // what the detector must find
	memoryMB  int
	want      string
}

// realApps: a Next.js app as create-next-app@16.4.3 made it (app router,
// TypeScript, Tailwind, npm; node_modules, .next and next-env.d.ts left out,
// and Google Fonts taken out of app/layout.tsx: these machines cannot reach
// them), a Nuxt 4 app, a plain Node server, a Go module and a static site.
var realApps = []realApp{
	{dir: "nextjs", framework: "nextjs", memoryMB: 256, want: "To get started, edit the"},
	{dir: "nuxt", framework: "nuxt", memoryMB: 192, want: "Hello from Nuxt on Zeitwork"},
	{dir: "node", framework: "node", memoryMB: 64, want: "Hello from a plain Node server"},
	{dir: "go", framework: "go", memoryMB: 32, want: "Hello from a Go module"},
	{dir: "static", framework: "static", memoryMB: 32, want: "Hello from a static site"},
}

// TestRealAppsServe: each app is its own project, uploaded through the
// public API as `zeitwork deploy` does; the builder detects it, builds the
// generated Dockerfile on the base images made on this machine, and the app
// answers its own page at its project's host through the edge. The builds
// run at once.
func TestRealAppsServe(t *testing.T) {
	// With the five builds sharing two CPUs, one node pulling the ~100 MB
	// Node image for three instances took over two minutes in CI (runs 36
	// and 46): the default deadlines (PULL_DEADLINE 10 min, then
	// HEALTHY_DEADLINE 2 min from the first start) are meant to let it.
	p := startPlatform(t, 1)
	api := fmt.Sprintf("http://localhost:%d", p.base-20)
	p.wait(60*time.Second, "the api to serve", func() bool {
		resp, err := http.Get(api + "/v1/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	var me struct {
		Username string `json:"username"`
	}
	call(t, browser, "GET", api+"/v1/auth/github?next=/v1/me", "", 200, &me)
	if me.Username != githubemu.DevLogin {
		t.Fatalf("signed in as %q, want %s", me.Username, githubemu.DevLogin)
	}

	// Every app is uploaded and deployed first, so that the builder builds
	// them at once; then each is waited for.
	began := time.Now()
	started := make([]startedApp, len(realApps))
	for i, app := range realApps {
		started[i] = startApp(t, browser, api, app)
	}
	var report []string
	for i, app := range realApps {
		t.Run(app.dir, func(t *testing.T) {
			id := waitApp(t, p, browser, api, app, started[i])
			d, err := p.q.DeploymentGetByID(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			report = append(report, fmt.Sprintf("%s: queued %s, building %s, deploying %s: asked → active %s",
				app.dir, d.BuildingAt.Sub(d.CreatedAt).Round(100*time.Millisecond),
				d.DeployingAt.Sub(*d.BuildingAt).Round(100*time.Millisecond),
				d.ActiveAt.Sub(*d.DeployingAt).Round(100*time.Millisecond),
				d.ActiveAt.Sub(d.CreatedAt).Round(100*time.Millisecond)))
		})
	}
	t.Logf("%s\nall serving through the edge %s after the first upload", strings.Join(report, "\n"), time.Since(began).Round(100*time.Millisecond))
}

// startedApp is an app's project and its deployment.
type startedApp struct {
	slug       string
	deployment uuid.UUID
}

// startApp creates app's project, uploads its directory and deploys it.
func startApp(t *testing.T, c *http.Client, api string, app realApp) startedApp {
	t.Helper()
	var proj struct {
		ID   uuid.UUID `json:"id"`
		Slug string    `json:"slug"`
	}
	call(t, c, "POST", api+"/v1/projects",
		fmt.Sprintf(`{"name":"Real %s","cpu_millis":100,"memory_mb":%d}`, app.dir, app.memoryMB), 201, &proj)

	var up struct {
		Key    string            `json:"key"`
		URL    string            `json:"url"`
		Fields map[string]string `json:"fields"`
	}
	call(t, c, "POST", api+"/v1/projects/"+proj.ID.String()+"/uploads", "", 201, &up)
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	for k, v := range up.Fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", "source.tar.gz")
	fw.Write(tarGzDir(t, filepath.Join("testdata", "apps", app.dir)))
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

	var d struct {
		ID uuid.UUID `json:"id"`
	}
	call(t, c, "POST", api+"/v1/deployments", fmt.Sprintf(`{"project_id":%q,"archive_key":%q}`, proj.ID, up.Key), 201, &d)
	return startedApp{slug: proj.Slug, deployment: d.ID}
}

// waitApp waits until app's deployment is active and its host answers with
// app.want through the edge.
func waitApp(t *testing.T, p *platform, c *http.Client, api string, app realApp, s startedApp) uuid.UUID {
	t.Helper()
	var d struct {
		ID            uuid.UUID `json:"id"`
		Status        string    `json:"status"`
		FailureReason string    `json:"failure_reason"`
		Framework     string    `json:"framework"`
	}
	// Generous: a cold Next.js build installs some 360 packages, and the
	// five builds share two CPUs.
	waitFor(t, 15*time.Minute, app.dir+"'s deployment to go active", func() bool {
		call(t, c, "GET", api+"/v1/deployments/"+s.deployment.String(), "", 200, &d)
		if d.Status == "failed" {
			t.Fatalf("%s's deployment failed: %s\nbuild log:\n%s", app.dir, d.FailureReason, buildLogTail(t, c, api, d.ID))
		}
		return d.Status == "active"
	}, p.out, p.errOut)
	if d.Framework != app.framework {
		t.Errorf("%s detected as %q, want %q", app.dir, d.Framework, app.framework)
	}
	host := s.slug + ".zeitwork.localhost"
	waitFor(t, 2*time.Minute, host+" to answer with "+app.dir+"'s page", func() bool {
		return strings.Contains(throughEdge(t, p, host), app.want)
	}, p.out, p.errOut)
	return d.ID
}

// buildLogTail is the end of a deployment's build log, read through the API.
func buildLogTail(t *testing.T, c *http.Client, api string, deployment uuid.UUID) string {
	t.Helper()
	var page struct {
		Items []struct {
			Text string `json:"text"`
		} `json:"items"`
	}
	call(t, c, "GET", api+"/v1/deployments/"+deployment.String()+"/logs?source=build&limit=5000", "", 200, &page)
	var lines []string
	for _, l := range page.Items[max(0, len(page.Items)-80):] {
		lines = append(lines, l.Text)
	}
	return strings.Join(lines, "\n")
}

// tarGzDir is dir as `zeitwork deploy` uploads it: a gzipped tar of its
// files, names relative to it.
func tarGzDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = "./" + filepath.ToSlash(rel)
		if e.IsDir() {
			h.Name = strings.TrimSuffix(h.Name, "/") + "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		t.Fatalf("archive %s: %v", dir, err)
	}
	return buf.Bytes()
}
