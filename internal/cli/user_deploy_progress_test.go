package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// A multi-stage build as BuildKit's plain progress writes it into the
// build log: a step's header may repeat when its output is interleaved
// with another's, and BuildKit's own vertices are not steps.
const buildkitPlain = `#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 312B done
#1 DONE 0.0s
#2 [internal] load metadata for docker.io/library/node:22-bookworm-slim
#2 DONE 0.1s
#3 [build 1/4] FROM docker.io/library/node:22-bookworm-slim@sha256:00
#3 CACHED
#4 [build 2/4] COPY package*.json ./
#4 DONE 0.1s
#5 [build 3/4] RUN npm ci
#5 0.912 added 1 package
#6 [stage-1 1/2] FROM docker.io/library/node:22-bookworm-slim@sha256:00
#6 DONE 0.0s
#5 [build 3/4] RUN npm ci
#5 1.204 done
#5 DONE 1.3s
#7 [build 4/4] COPY . .
#7 DONE 0.1s
#8 [stage-1 2/2] COPY --from=build /app /app
#8 DONE 0.2s
#9 exporting to image
#9 DONE 0.5s`

func TestBuildStepsCountsBuildKitSteps(t *testing.T) {
	var s buildSteps
	var seen []string
	for _, l := range strings.Split(buildkitPlain, "\n") {
		if s.add(l) {
			d, n := s.count()
			seen = append(seen, fmt.Sprintf("%d/%d", d, n))
		}
	}
	// The headers announce 4 + 2 steps; each DONE or CACHED is one more.
	want := "0/4 1/4 1/4 2/4 2/4 2/6 3/6 4/6 4/6 5/6 5/6 6/6"
	if got := strings.Join(seen, " "); got != want {
		t.Errorf("counts %s\nwant   %s", got, want)
	}
}

// openPTY returns a pseudo-terminal's two ends: what the program writes
// to the second appears on the first.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("a terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return master, tty
}

// TestDeployDrawsProgressOnATerminal: on a terminal, deploy draws a bar of
// the build's steps as the log announces and finishes them, then one of
// the instances turning healthy out of three, instead of the log lines;
// the URL still goes alone to stdout. (TestDeploy covers the plain lines
// off a terminal.)
func TestDeployDrawsProgressOnATerminal(t *testing.T) {
	e := newUserEnv(t)
	mc, s3 := testenv.Bucket(t, "cliprogress")
	e.api.Uploads = &upload.Store{S3: mc, Bucket: s3.Bucket, MaxBytes: 1 << 20, Expiry: time.Minute}
	e.api.Logs = api.Logs{Reader: &logs.Reader{Pool: e.pool, Poll: 50 * time.Millisecond, Log: zlog.Discard()}, KeepAlive: 20 * time.Millisecond}
	alice, _ := e.signUp(1, "alice")
	e.ok("login", "--token", e.tokenFor(alice))
	var p client.Project
	e.okJSON(&p, "projects", "create", "app", "--link")
	if err := os.WriteFile(filepath.Join(e.dir, "index.html"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}

	master, tty := openPTY(t)
	var screen testenv.Buffer
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(&screen, master) // until the test closes the terminal
		close(copied)
	}()

	// The stand-in platform: the build writes BuildKit's lines a few at a
	// time, then three instances on a node turn healthy one by one, each
	// once the display has shown the one before.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	platform := make(chan error, 1)
	go func() { platform <- standInDeploy(ctx, e, p.Id, &screen) }()
	var out testenv.Buffer
	code := Main(context.Background(), []string{"deploy", "-C", e.dir},
		Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config, "ZEITWORK_API_URL=" + e.url, "TERM=xterm"}, Stdout: &out, Stderr: tty})
	if err := <-platform; err != nil {
		t.Fatalf("the stand-in platform: %v", err)
	}
	tty.Close()
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		master.Close()
		<-copied
	}
	drawn := screen.String()
	if code != ExitOK || out.String() != "https://app."+testAppsDomain+"\n" {
		t.Fatalf("exit %d, stdout %q\nterminal: %q", code, out.String(), drawn)
	}
	for _, want := range []string{"build steps", "(2/6", "(6/6", "instances healthy", "(1/3", "(3/3"} {
		if !strings.Contains(drawn, want) {
			t.Errorf("the terminal never showed %q:\n%q", want, drawn)
		}
	}
	// The bar redraws itself in place, and keeps the log lines back.
	if !strings.Contains(drawn, "\r") || strings.Contains(drawn, "build    | ") || strings.Contains(drawn, "RUN npm ci") {
		t.Errorf("not a display drawn in place:\n%q", drawn)
	}
	if i := strings.Index(drawn, "instances healthy"); i < 0 || regexp.MustCompile(`\(\d/6`).MatchString(drawn[i:]) {
		t.Errorf("the build's bar was drawn again after it finished:\n%q", drawn)
	}
}

// standInDeploy moves the project's first queued deployment the way the
// builder and the operator would; an instance turns healthy only once
// screen shows the last one did, so that no state goes unseen.
func standInDeploy(ctx context.Context, e *userEnv, project uuid.UUID, screen *testenv.Buffer) error {
	var dep, build uuid.UUID
	for {
		err := e.pool.QueryRow(ctx, `SELECT d.id, b.id FROM deployments d JOIN builds b ON b.deployment_id = d.id
			WHERE d.project_id = $1 AND d.status = 'queued' LIMIT 1`, project).Scan(&dep, &build)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	pause := func() { time.Sleep(150 * time.Millisecond) }
	exec := func(sql string, args ...any) error {
		_, err := e.pool.Exec(ctx, sql, args...)
		return err
	}
	if err := exec(`UPDATE deployments SET status = 'building' WHERE id = $1`, dep); err != nil {
		return err
	}
	w := buildlog.NewWriter(e.pool, build, buildlog.DefaultLimits, zlog.Discard())
	for i, l := range strings.Split(buildkitPlain, "\n") {
		w.Line(buildlog.Stdout, "%s", l)
		if i%3 == 2 { // the writer sends lines on its own, soon after
			pause()
		}
	}
	if err := w.Close(ctx); err != nil {
		return err
	}
	node, image := id.New(), id.New()
	for _, step := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE builds SET status = 'succeeded' WHERE id = $1`, []any{build}},
		{`INSERT INTO images (id, project_id, build_id, repository, tag, digest) VALUES ($1, $2, $3, 'app', 'v1', 'sha256:' || repeat('a', 64))`, []any{image, project, build}},
		{`INSERT INTO nodes (id, hostname, internal_address, cpu_millis, memory_mb, free_cpu_millis, free_memory_mb, ipv6_prefix)
			VALUES ($1, 'node1', '10.0.0.1:7000', 1000, 1024, 1000, 1024, 'fd00:0:0:1::/64')`, []any{node}},
		{`UPDATE deployments SET status = 'deploying', image_id = $2 WHERE id = $1`, []any{dep, image}},
	} {
		if err := exec(step.sql, step.args...); err != nil {
			return fmt.Errorf("%s: %w", step.sql, err)
		}
	}
	var instances []uuid.UUID
	for i := range 3 {
		in := id.New()
		if err := exec(`INSERT INTO instances (id, deployment_id, node_id, image_id, ipv6_address, port, cpu_millis, memory_mb)
			VALUES ($1, $2, $3, $4, $5, 3000, 100, 64)`, in, dep, node, image, fmt.Sprintf("fd00:0:0:1::%d", i+10)); err != nil {
			return err
		}
		instances = append(instances, in)
	}
	shown := func(what string) error {
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(screen.String(), what); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("the display never showed %q: %q", what, screen.String())
			}
		}
		return nil
	}
	if err := shown("(0/3"); err != nil {
		return err
	}
	for n, in := range instances {
		if err := exec(`UPDATE instances SET state = 'healthy' WHERE id = $1`, in); err != nil {
			return err
		}
		if err := shown(fmt.Sprintf("(%d/3", n+1)); err != nil {
			return err
		}
	}
	if err := exec(`UPDATE deployments SET status = 'active', active_at = now() WHERE id = $1`, dep); err != nil {
		return err
	}
	return exec(`UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, dep, project)
}
