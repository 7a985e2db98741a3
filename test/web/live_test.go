package web

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestDashboardGoesLive: a new user on `zeitwork dev` (one simulated
// node, the real builder, operator, node agent and edge) does everything
// in the browser: signs in through the emulator, installs the App,
// imports a repository, watches its build log stream and the deployment
// go live without a reload, and opens its URL, which answers with the
// app; then a push goes live on the open project page, and a rollback
// from it puts the first commit back on the URL.
// packages/web/tests/live.mjs holds the steps.
func TestDashboardGoesLive(t *testing.T) {
	bin, bundle, chromium := browserDeps(t)
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)

	// The repository: a Dockerfile and a prebuilt static server (no base
	// image can be pulled here), answering with its GREETING.
	app := filepath.Join(t.TempDir(), "app")
	build := exec.Command("go", "build", "-trimpath", "-o", app, ".")
	build.Dir = "../../internal/nodeagent/testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build app: %v\n%s", err, out)
	}

	dbURL, state := testdb.Empty(t), t.TempDir()
	prefix, base := testenv.DevPrefix(t, "zwweb", 1), testenv.DevPortBase(t, 210)
	var out, errOut testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"dev", "--bare"}, cli.Env{Environ: append(os.Environ(),
			"DATABASE_URL="+dbURL, "DEV_STATE_DIR="+state, "DEV_NODES=1", "DEV_PREFIX="+prefix,
			fmt.Sprintf("DEV_PORT_BASE=%d", base), "LOG_LEVEL=warn", "API_WEB_DIR="+bundle), Stdout: &out, Stderr: &errOut})
	}()
	pool := testdb.Pool(t, dbURL)
	t.Cleanup(func() {
		// Stop every instance through the agents before dev stops, so no
		// test leaves instances running on the machine.
		bg := context.Background()
		pool.Exec(bg, `UPDATE deployments SET status = 'stopped' WHERE status = 'active'`)
		pool.Exec(bg, `UPDATE instances SET desired_state = 'stopped'`)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			var n int
			pool.QueryRow(bg, `SELECT count(*) FROM instances WHERE state NOT IN ('stopped', 'failed')`).Scan(&n)
			if n == 0 {
				break
			}
		}
		cancel()
		<-done
	})
	api := fmt.Sprintf("http://localhost:%d", base-20)
	wait := func(within time.Duration, what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(within); !cond(); time.Sleep(250 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited %s for %s\nstdout:\n%s\nstderr:\n%s", within, what, out.String(), errOut.String())
			}
		}
	}
	wait(2*time.Minute, "the api to serve the dashboard", func() bool {
		resp, err := http.Get(api + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	// dev/app on the emulator, where it serves the dev user's repositories.
	bare := filepath.Join(state, "github", "repos", "app.git")
	work := t.TempDir()
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", bare},
		{"clone", "-q", bare, work},
	} {
		if b, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}
	const greeting = "hello from the dashboard"
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY app /app\nENV GREETING=%q\nENTRYPOINT [\"/app\"]\n", greeting)
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(app, filepath.Join(work, "app")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"add", "."},
		{"-c", "user.name=Dev", "-c", "user.email=dev@zeitwork.localhost", "commit", "-q", "-m", greeting},
		{"push", "-q", "origin", "main"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}

	shots := os.Getenv("ZEITWORK_WEB_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	cmd := nodeCmd(t, bin, "tests/live.mjs")
	cmd.Env = append(cmd.Env, "BASE_URL="+api, "REPOSITORY="+githubemu.DevLogin+"/app", "GREETING="+greeting, "WORK="+work,
		"CHROMIUM="+chromium, "SCREENSHOTS="+shots)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("live.mjs: %v\n%s\n%s\ndev stderr:\n%s", err, stdout.String(), stderr.String(), lastLines(errOut.String(), 40))
	}
	t.Log(strings.TrimSpace(stdout.String()))
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
