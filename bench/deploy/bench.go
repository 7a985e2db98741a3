package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// The app: Node.js from the base image made on this machine, a dependency
// step whose input is deps.txt (slow enough to matter, cached while
// deps.txt is unchanged), and the page.
const dockerfile = `FROM %s/library/node:22-bookworm-slim
WORKDIR /app
COPY deps.txt .
RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; cp deps.txt deps.done
COPY server.js .
CMD ["node", "server.js"]
`

const serverJS = `const page = %q;
require("http").createServer((q, s) => s.end(page)).listen(process.env.PORT || 8080);
`

type bench struct {
	p       *platform
	work    string
	repo    string // the clone pushed to the emulator
	slug    string // the project connected to the repository
	upload  string // the directory `zeitwork deploy` sends
	upSlug  string // its project
	refDir  string // what buildctl builds for the reference
	refRepo string
	rts     []*runtime.Runtime // the reference's "nodes": one runtime and containerd namespace each
	cliEnv  []string
	pulled  []string // the reference's images, removed at the end
}

func newBench(ctx context.Context, p *platform, work string) (*bench, error) {
	b := &bench{p: p, work: work, repo: filepath.Join(work, "app"), upload: filepath.Join(work, "upload"), refDir: filepath.Join(work, "ref"),
		refRepo: p.o.registry + "/zeitwork-bench/deploy-ref-" + id.New().String()[30:]}
	b.cliEnv = append(os.Environ(), "ZEITWORK_API_URL="+p.api, "ZEITWORK_TOKEN="+p.token, "XDG_CONFIG_HOME="+filepath.Join(work, "config"), "NO_COLOR=1")

	// The repository, with its first commit, where the emulator serves
	// dev's repositories from.
	bare := filepath.Join(p.state, "github", "repos", "app.git")
	if err := git("", "init", "-q", "--bare", "-b", "main", bare); err != nil {
		return nil, err
	}
	if err := git("", "clone", "-q", bare, b.repo); err != nil {
		return nil, err
	}
	// An empty clone's branch is git's default name, which may not be main.
	if err := git(b.repo, "symbolic-ref", "HEAD", "refs/heads/main"); err != nil {
		return nil, err
	}
	for _, dir := range []string{b.repo, b.upload, b.refDir} {
		if err := b.write(dir, "deps-0", "first"); err != nil {
			return nil, err
		}
	}
	if _, err := b.commitAndPush("first"); err != nil {
		return nil, err
	}
	full := githubemu.DevLogin + "/app"
	if err := p.wait(ctx, 30*time.Second, "the installation to see "+full, func() (bool, error) {
		var repos struct {
			Items []struct {
				FullName string `json:"full_name"`
			} `json:"items"`
		}
		if err := p.call("GET", fmt.Sprintf("/v1/github/installations/%d/repositories", githubemu.DevInstallationID), "", 200, &repos); err != nil {
			return false, err
		}
		for _, r := range repos.Items {
			if r.FullName == full {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return nil, err
	}
	var proj struct {
		Slug string `json:"slug"`
	}
	if err := p.call("POST", "/v1/projects", fmt.Sprintf(`{"name":"bench","repository":{"installation_id":%d,"full_name":%q},"cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`,
		githubemu.DevInstallationID, full), 201, &proj); err != nil {
		return nil, err
	}
	b.slug = proj.Slug
	// Untimed: the first deployment pulls the base image onto the nodes.
	if err := p.wait(ctx, 10*time.Minute, "the first commit to serve", func() (bool, error) {
		return p.answer(b.host()) == "first", nil
	}); err != nil {
		return nil, err
	}
	if err := p.call("POST", "/v1/projects", `{"name":"bench upload","cpu_millis":100,"memory_mb":64,"health_check_path":"/healthz"}`, 201, &proj); err != nil {
		return nil, err
	}
	b.upSlug = proj.Slug
	if _, _, err := b.cliDeploy(ctx); err != nil {
		return nil, fmt.Errorf("first zeitwork deploy: %w", err)
	}
	for i := range p.o.nodes {
		rt, err := runtime.New(ctx, runtime.Config{Address: p.o.containerd, Namespace: fmt.Sprintf("%s-ref-%d", p.prefix, i+1), Owner: "bench-deploy",
			LogDir: filepath.Join(work, "ref-logs"), PlainHTTPRegistries: []string{p.o.registry}, StartBoost: lo.Ternary(p.o.boost, 0, -time.Second)})
		if err != nil {
			b.close()
			return nil, err
		}
		b.rts = append(b.rts, rt)
	}
	// Untimed: the reference's first build and start, as the platform's.
	if _, err := b.buildctl(ctx, "warm-up"); err != nil {
		return nil, err
	}
	if _, err := b.runtimeAlone(ctx, b.refRepo+":warm-up"); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bench) close() {
	for i, rt := range b.rts {
		for _, ref := range b.pulled {
			_ = rt.RemoveImage(context.Background(), ref)
		}
		_ = rt.Close()
		ns := fmt.Sprintf("%s-ref-%d", b.p.prefix, i+1)
		if err := removeNamespace(b.p.o.containerd, ns); err != nil {
			fmt.Fprintf(os.Stderr, "bench/deploy: containerd namespace %s: %v\n", ns, err)
		}
	}
}

func (b *bench) host() string { return b.slug + ".zeitwork.localhost" }

// write puts the app into dir: deps is the dependency step's input, page
// what the server answers.
func (b *bench) write(dir, deps, page string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, content := range map[string]string{
		"Dockerfile": fmt.Sprintf(dockerfile, b.p.o.registry), "deps.txt": deps + "\n", "server.js": fmt.Sprintf(serverJS, page),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func git(dir string, args ...string) error {
	cmd := exec.Command("git", append([]string{"-c", "user.name=Bench", "-c", "user.email=bench@zeitwork.localhost"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (b *bench) commitAndPush(msg string) (string, error) {
	if err := git(b.repo, "add", "-A"); err != nil {
		return "", err
	}
	if err := git(b.repo, "commit", "-q", "-m", msg); err != nil {
		return "", err
	}
	out, err := exec.Command("git", "-C", b.repo, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), git(b.repo, "push", "-q", "origin", "main")
}

// once is one run of every measurement.
func (b *bench) once(ctx context.Context, r int) (sample, error) {
	var s sample
	var err error
	nonce := fmt.Sprintf("deps-%d-%d", r, rand.Int64())
	if s.hookCold, err = b.push(ctx, nonce, fmt.Sprintf("cold %d", r)); err != nil {
		return s, fmt.Errorf("cold push: %w", err)
	}
	if s.hookWarm, err = b.push(ctx, nonce, fmt.Sprintf("warm %d", r)); err != nil {
		return s, fmt.Errorf("warm push: %w", err)
	}
	s.pushedToActive = append(s.pushedToActive, s.hookCold.pushedToActive, s.hookWarm.pushedToActive)

	var active time.Duration
	if s.cliDeploy, s.cliDeployExit, active, err = b.timedCLIDeploy(ctx); err != nil {
		return s, err
	}
	s.pushedToActive = append(s.pushedToActive, active)

	// The reference, on the same buildkitd, registry and containerd.
	if err := b.write(b.refDir, fmt.Sprintf("ref-%d-%d", r, rand.Int64()), fmt.Sprintf("cold %d", r)); err != nil {
		return s, err
	}
	tag := fmt.Sprintf("cold-%d", r)
	if s.refBuildCold, err = b.buildctl(ctx, tag); err != nil {
		return s, err
	}
	if s.refRuntime, err = b.runtimeAlone(ctx, b.refRepo+":"+tag); err != nil {
		return s, err
	}
	deps, _ := os.ReadFile(filepath.Join(b.refDir, "deps.txt"))
	if err := b.write(b.refDir, strings.TrimSpace(string(deps)), fmt.Sprintf("warm %d", r)); err != nil {
		return s, err
	}
	if s.refBuildWarm, err = b.buildctl(ctx, fmt.Sprintf("warm-%d", r)); err != nil {
		return s, err
	}
	if s.refBuildSame, err = b.buildctl(ctx, fmt.Sprintf("same-%d", r)); err != nil {
		return s, err
	}
	return s, nil
}

// settle waits, unless -settle=false, until no instance is still being
// stopped: a node agent's pass waits for the stops it makes (up to the stop
// grace, 10 s, for an app that ignores SIGTERM as Node.js does as PID 1),
// and an instance assigned meanwhile starts only on the next pass. The
// reference stops nothing, so the platform is timed on quiet nodes; with
// -settle=false each deploy follows the last as a user's would.
func (b *bench) settle(ctx context.Context) error {
	if !b.p.o.settle {
		return nil
	}
	return b.p.wait(ctx, 2*time.Minute, "the replaced instances to stop", func() (bool, error) {
		var n int
		err := b.p.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM instances WHERE desired_state = 'stopped' AND state NOT IN ('stopped', 'failed'))
			+ (SELECT count(*) FROM deployments WHERE status = 'retiring')`).Scan(&n)
		return n == 0, err
	})
}

// push commits a change and times the webhook's receipt → the edge
// answering the new page.
func (b *bench) push(ctx context.Context, deps, page string) (timing, error) {
	var t timing
	if err := b.settle(ctx); err != nil {
		return t, err
	}
	if err := b.write(b.repo, deps, page); err != nil {
		return t, err
	}
	pushed := time.Now()
	sha, err := b.commitAndPush(page)
	if err != nil {
		return t, err
	}
	var serving time.Time
	if err := b.p.wait(ctx, 10*time.Minute, page+" to serve", func() (bool, error) {
		if b.p.answer(b.host()) == page {
			serving = time.Now()
			return true, nil
		}
		var failed bool
		err := b.p.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE github_commit_sha = $1 AND status = 'failed')`, sha).Scan(&failed)
		if err == nil && failed {
			return false, fmt.Errorf("the deployment of %q failed", page)
		}
		return false, err
	}); err != nil {
		return t, err
	}
	var received time.Time
	// The first push delivery after the push: the emulator delivers each
	// push once.
	if err := b.p.pool.QueryRow(ctx, `SELECT received_at FROM webhook_deliveries WHERE event = 'push' AND received_at >= $1 ORDER BY received_at LIMIT 1`,
		pushed).Scan(&received); err != nil {
		return t, fmt.Errorf("the delivery of %q: %w", page, err)
	}
	t.serving = serving.Sub(received)
	t.pushedToActive, err = b.pushedToActive(ctx, `d.github_commit_sha = $1`, sha)
	return t, err
}

// pushedToActive is the time from the deployment's image row (written
// when the builder has pushed it) to the deployment's active_at.
func (b *bench) pushedToActive(ctx context.Context, where string, arg any) (time.Duration, error) {
	var d time.Duration
	err := b.p.wait(ctx, 30*time.Second, "active_at", func() (bool, error) {
		var us *int64
		err := b.p.pool.QueryRow(ctx, `SELECT (extract(epoch FROM d.active_at - i.created_at) * 1e6)::bigint
			FROM deployments d JOIN images i ON i.id = d.image_id WHERE `+where, arg).Scan(&us)
		if err != nil || us == nil {
			return false, nil
		}
		d = time.Duration(*us) * time.Microsecond
		return true, nil
	})
	return d, err
}

// cliDeploy runs `zeitwork deploy` of the upload directory; it returns the
// deployment and the time to the CLI's exit.
func (b *bench) cliDeploy(ctx context.Context) (uuid.UUID, time.Duration, error) {
	cmd := exec.CommandContext(ctx, b.p.o.zeitwork, "deploy", b.upload, "--project", b.upSlug, "--json")
	cmd.Env = b.cliEnv
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("zeitwork deploy: %v: %s", err, errOut.String())
	}
	var d struct {
		ID     uuid.UUID `json:"id"`
		Status string    `json:"status"`
	}
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.Status != "active" {
		return uuid.Nil, 0, fmt.Errorf("zeitwork deploy printed %q (%v)", out.String(), err)
	}
	return d.ID, took, nil
}

// timedCLIDeploy deploys the unchanged directory and times it to its
// deployment's own host answering through the edge.
func (b *bench) timedCLIDeploy(ctx context.Context) (serving, exit, active time.Duration, err error) {
	if err := b.settle(ctx); err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	dep, exit, err := b.cliDeploy(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	host := dep.String() + ".zeitwork.localhost"
	if err := b.p.wait(ctx, time.Minute, "the deployment's host to answer", func() (bool, error) {
		return b.p.answer(host) != "", nil
	}); err != nil {
		return 0, 0, 0, err
	}
	serving = time.Since(start)
	active, err = b.pushedToActive(ctx, `d.id = $1`, dep)
	if err == nil {
		b.timeline(ctx, start, dep)
	}
	return serving, exit, active, err
}

// timeline prints where a deployment's time went, from start (the
// command's), to stderr.
func (b *bench) timeline(ctx context.Context, start time.Time, dep uuid.UUID) {
	var created, building, buildStarted, buildFinished, pushed, deploying, active *time.Time
	err := b.p.pool.QueryRow(ctx, `SELECT d.created_at, d.building_at, bu.started_at, bu.finished_at, i.created_at, d.deploying_at, d.active_at
		FROM deployments d JOIN builds bu ON bu.deployment_id = d.id LEFT JOIN images i ON i.id = d.image_id WHERE d.id = $1`, dep).
		Scan(&created, &building, &buildStarted, &buildFinished, &pushed, &deploying, &active)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/deploy: timeline of %s: %v\n", dep, err)
		return
	}
	var parts []string
	last := start
	for _, p := range []struct {
		name string
		at   *time.Time
	}{{"created", created}, {"building", building}, {"build started", buildStarted}, {"build finished", buildFinished},
		{"image pushed", pushed}, {"deploying", deploying}, {"active", active}} {
		if p.at == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s +%d ms", p.name, p.at.Sub(last).Milliseconds()))
		last = *p.at
	}
	fmt.Fprintf(os.Stderr, "bench/deploy: zeitwork deploy: %s\n", strings.Join(parts, ", "))
}

// buildctl builds the reference directory alone and pushes it, with the
// registry cache options the builder uses.
func (b *bench) buildctl(ctx context.Context, tag string) (time.Duration, error) {
	cache := b.refRepo + ":buildcache"
	cmd := exec.CommandContext(ctx, b.p.o.buildctl, "--addr", b.p.o.buildkit, "build",
		"--frontend", "dockerfile.v0", "--local", "context="+b.refDir, "--local", "dockerfile="+b.refDir,
		"--output", "type=image,name="+b.refRepo+":"+tag+",push=true,registry.insecure=true",
		"--export-cache", "type=registry,ref="+cache+",mode=max,registry.insecure=true,ignore-error=true",
		"--import-cache", "type=registry,ref="+cache+",registry.insecure=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		return 0, fmt.Errorf("buildctl: %v: %s", err, strings.Join(lines[max(0, len(lines)-8):], "\n"))
	}
	return time.Since(start), nil
}

// runtimeAlone is containerd + runc with nothing of the platform around
// them: pull, create, start, and the first answer on the host's network.
func (b *bench) runtimeAlone(ctx context.Context, ref string) (time.Duration, error) {
	b.pulled = append(b.pulled, ref)
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		took  time.Duration
		first error
	)
	for _, rt := range b.rts {
		wg.Go(func() {
			d, err := startOne(ctx, rt, ref, start)
			mu.Lock()
			defer mu.Unlock()
			took = max(took, d)
			if first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return took, first
}

// startOne pulls ref and starts an instance of it on rt as a node's agent
// would, and returns the time from start to its first answer.
func startOne(ctx context.Context, rt *runtime.Runtime, ref string, start time.Time) (time.Duration, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	iid := id.New()
	if err := rt.Pull(ctx, ref, nil); err != nil {
		return 0, err
	}
	if err := rt.Create(ctx, runtime.Spec{InstanceID: iid, Image: ref, Port: port, HostNetwork: true, MemoryMB: 64, CPUMillis: 100}); err != nil {
		return 0, err
	}
	defer rt.Stop(context.WithoutCancel(ctx), iid, time.Second) //nolint:errcheck
	if err := rt.Start(ctx, iid); err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: time.Second}
	for time.Since(start) < time.Minute {
		if res, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
			res.Body.Close()
			return time.Since(start), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("the reference container never answered")
}
