// Command deploy-speed measures image pushed → deployment active: three
// node agents as processes (each a network namespace playing its node, the
// real containerd + runc, the nftables policy, Postgres) and the operator's
// deploy step in this process, on an image already cached on the nodes.
//
// Each round makes a deployment of an image that is in the registry and
// on the nodes (what the builder leaves behind), then steps it as the
// operator's deploy task does, until it is active: placing 3 instances on
// 3 nodes, the agents creating, starting and health-checking them, the
// operator activating. The deploy task's pickup from the queue is not in
// it (bench/api measures that).
//
// The reference, in the same round: the runtime package alone creating and
// starting the same 3 containers at once and waiting for each one's first
// HTTP answer (no database, no network namespace, no policy).
//
// It also reads the agents' logs for where each instance's time went.
// Run it with bench/deploy-speed/run.sh (root, the local stack running).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
	"github.com/zeitwork/zeitwork/bench/internal/benchnode"
	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// logWriter is the agents' instance log writer, which the runtime alone
// uses too.
var logWriter string

func main() {
	bin := flag.String("zeitwork", "", "path to the zeitwork binary (the agents; zeitwork-logwriter beside it is used)")
	adminURL := flag.String("db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	reg := flag.String("registry", "127.0.0.1:25000", "registry")
	bk := flag.String("buildkit", "unix:///run/zeitwork-dev/buildkitd.sock", "buildkitd")
	ctrd := flag.String("containerd", "/run/zeitwork-dev/containerd.sock", "containerd socket")
	rounds := flag.Int("rounds", 5, "deployments measured")
	wake := flag.Bool("wakeups", true, "wake the deploy step on the agents' reports (false: poll only, as before)")
	flag.Parse()
	logWriter = logwriter.Beside(*bin)
	if err := run(*bin, *adminURL, *reg, *bk, *ctrd, *rounds, *wake); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const nodes = 3

// refBoost is the reference runtime's StartBoost: the agents' own
// (INSTANCE_START_BOOST=0 in the environment turns it off for both).
func refBoost() time.Duration {
	if os.Getenv("INSTANCE_START_BOOST") == "0" {
		return -time.Second
	}
	return 0
}

func run(bin, adminURL, reg, bkAddr, ctrd string, rounds int, wake bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tag := id.New().String()[30:]
	work, err := os.MkdirTemp("", "zw-bench-deploy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dbURL, drop, err := benchdb.Create(ctx, bin, adminURL, "deploy")
	if err != nil {
		return err
	}
	defer drop()

	repo, digest, err := appImage(ctx, work, reg, bkAddr)
	if err != nil {
		return err
	}
	ref := repo + "@" + digest

	var agents []*agentProc
	defer func() {
		for _, a := range agents {
			a.close(ctrd)
		}
	}()
	for i := range nodes {
		a, err := startAgent(bin, dbURL, ctrd, reg, work, fmt.Sprintf("%s%d", tag, i), i)
		if err != nil {
			return err
		}
		agents = append(agents, a)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := waitNodes(ctx, pool, nodes); err != nil {
		return err
	}
	proj, img, err := project(ctx, pool, repo, digest, tag)
	if err != nil {
		return err
	}
	lc := &operator.Lifecycle{Pool: pool, Place: operator.SchedulerPlacer(30 * time.Second), Policy: operator.DefaultPolicy, Log: zlog.Discard()}
	if wake {
		lc.Wakeups = &operator.Wakeups{}
		go lc.Wakeups.Run(ctx, pool, zlog.Discard()) //nolint:errcheck
		time.Sleep(200 * time.Millisecond)           // LISTEN in place
	}
	deploy := func() (time.Duration, error) {
		dep := id.New()
		start := time.Now()
		if _, err := pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3, now())`, dep, proj, img); err != nil {
			return 0, err
		}
		if err := lc.DeployUntilDone(ctx, dep); err != nil {
			return 0, err
		}
		took := time.Since(start)
		deploys = append(deploys, deployTimes{start: start, done: start.Add(took), instances: instancesOf(ctx, pool, dep)})
		d, err := deployment.Store{DB: pool}.Get(ctx, dep)
		if err != nil {
			return 0, err
		}
		if d.Status != deployment.StatusActive {
			return 0, fmt.Errorf("deployment %s is %s: %v", dep, d.Status, d.FailureReason)
		}
		return took, nil
	}
	// The first deployment pulls the image onto the nodes.
	if _, err := deploy(); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	deploys = deploys[:0]
	defer benchnode.DeleteNamespace(ctrd, "zw-bench-ref-"+tag)
	rt, err := runtime.New(ctx, runtime.Config{Address: ctrd, Namespace: "zw-bench-ref-" + tag, Owner: "bench", LogDir: filepath.Join(work, "ref-logs"), PlainHTTPRegistries: []string{reg}, StartBoost: refBoost(), LogWriter: logWriter})
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := rt.Pull(ctx, ref, nil); err != nil {
		return err
	}
	defer rt.RemoveImage(context.Background(), ref) //nolint:errcheck

	var ours, refs []time.Duration
	for r := range rounds {
		d, err := deploy()
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		ours = append(ours, d)
		d, err = runtimeAlone(ctx, rt, ref)
		if err != nil {
			return fmt.Errorf("reference %d: %w", r, err)
		}
		refs = append(refs, d)
	}
	slices.Sort(ours)
	slices.Sort(refs)
	fmt.Printf("| %d deployments, 3 instances on 3 nodes, image cached, start boost %v | min | median | max |\n|---|---|---|---|\n", rounds, refBoost() == 0)
	fmt.Printf("| image pushed → deployment active (wakeups %v) | %s | %s | %s |\n", wake, benchnode.Ms(ours[0]), benchnode.Ms(ours[len(ours)/2]), benchnode.Ms(ours[len(ours)-1]))
	fmt.Printf("| runtime alone: 3 containers created + started → all answer | %s | %s | %s |\n", benchnode.Ms(refs[0]), benchnode.Ms(refs[len(refs)/2]), benchnode.Ms(refs[len(refs)-1]))
	fmt.Printf("| median ratio | | %.2f× | |\n\n", float64(ours[len(ours)/2])/float64(refs[len(refs)/2]))
	for _, a := range agents {
		a.stop()
	}
	steps(agents)
	return hardening(ctx, ctrd, reg, ref, work, tag)
}

// hardening measures what the instances' hardening costs the runtime:
// the user namespace (a re-owned copy of the image's files, made by the
// first create of an image, then a mapping per instance) and the log
// writer process per instance, each switched off in turn. Every variant
// gets a containerd namespace of its own, so its first create makes the
// re-owned copy afresh.
func hardening(ctx context.Context, ctrd, reg, ref, work, tag string) error {
	fmt.Printf("\n| runtime alone, one instance at a time (image cached) | first create of the image | create (median of 5) | start → answers (median of 5) |\n|---|---|---|---|\n")
	for i, v := range []struct {
		name          string
		userNS, logWr string
	}{
		{"user namespace + log writer (default)", runtime.UserNSAuto, ""},
		{"no user namespace", runtime.UserNSOff, ""},
		{"no log writer process", runtime.UserNSAuto, runtime.LogWriterNone},
		{"neither", runtime.UserNSOff, runtime.LogWriterNone},
	} {
		hardNS := fmt.Sprintf("zw-bench-hard%d-%s", i, tag)
		lw := v.logWr
		if lw == "" {
			lw = logWriter
		}
		defer benchnode.DeleteNamespace(ctrd, hardNS)
		rt, err := runtime.New(ctx, runtime.Config{Address: ctrd, Namespace: hardNS, Owner: "bench", LogDir: filepath.Join(work, "hard-logs"),
			PlainHTTPRegistries: []string{reg}, UserNS: v.userNS, LogWriter: lw, StartBoost: refBoost()})
		if err != nil {
			return err
		}
		if err := rt.Pull(ctx, ref, nil); err != nil {
			rt.Close()
			return err
		}
		var creates, starts []time.Duration
		for range 6 {
			iid := id.New()
			port := benchnode.FreePort()
			t0 := time.Now()
			if err := rt.Create(ctx, runtime.Spec{InstanceID: iid, Image: ref, Port: port, HostNetwork: true, MemoryMB: 64, CPUMillis: 100}); err != nil {
				rt.Close()
				return err
			}
			t1 := time.Now()
			if err := rt.Start(ctx, iid); err != nil {
				rt.Close()
				return err
			}
			for time.Since(t1) < time.Minute {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
				if err == nil {
					resp.Body.Close()
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			creates = append(creates, t1.Sub(t0))
			starts = append(starts, time.Since(t1))
			rt.Stop(ctx, iid, time.Second) //nolint:errcheck
		}
		first := creates[0]
		creates, starts = creates[1:], starts[1:]
		slices.Sort(creates)
		slices.Sort(starts)
		fmt.Printf("| %s | %s | %s | %s |\n", v.name, benchnode.Ms(first), benchnode.Ms(creates[len(creates)/2]), benchnode.Ms(starts[len(starts)/2]))
		rt.RemoveImage(ctx, ref) //nolint:errcheck
		rt.Close()
	}
	return nil
}

// runtimeAlone creates and starts 3 containers at once and waits for each
// one's first HTTP answer.
func runtimeAlone(ctx context.Context, rt *runtime.Runtime, ref string) (time.Duration, error) {
	ports := make([]int, nodes)
	for i := range ports {
		ports[i] = benchnode.FreePort()
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	answered := make([]time.Duration, nodes)
	for i := range nodes {
		wg.Go(func() {
			iid := id.New()
			// Stopped after its answer was timed: not part of the time.
			defer rt.Stop(context.Background(), iid, time.Second) //nolint:errcheck
			if err := rt.Create(ctx, runtime.Spec{InstanceID: iid, Image: ref, Port: ports[i], HostNetwork: true, MemoryMB: 64, CPUMillis: 100}); err != nil {
				errs[i] = err
				return
			}
			if err := rt.Start(ctx, iid); err != nil {
				errs[i] = err
				return
			}
			for time.Since(start) < time.Minute {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[i]))
				if err == nil {
					resp.Body.Close()
					answered[i] = time.Since(start)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			errs[i] = fmt.Errorf("never answered")
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return slices.Max(answered), nil
}

type agentProc struct {
	cmd  *exec.Cmd
	ns   string
	ctr  string
	work string
	log  string
}

func startAgent(bin, dbURL, ctrd, reg, work, tag string, i int) (*agentProc, error) {
	a := &agentProc{ns: "zwd" + tag, ctr: "zw-bench-deploy-" + tag, work: filepath.Join(work, "node"+tag)}
	a.log = filepath.Join(a.work, "agent.log")
	if err := os.MkdirAll(a.work, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "netns", "add", a.ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("netns: %v %s", err, out)
	}
	exec.Command("ip", "-n", a.ns, "link", "set", "lo", "up").Run() //nolint:errcheck
	logf, err := os.Create(a.log)
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "nodeagent")
	a.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL, fmt.Sprintf("NODE_INTERNAL_ADDRESS=127.0.0.1:%d", 10001+i), "NODE_STATE_DIR="+filepath.Join(a.work, "state"),
		"CLUSTER_TOKEN=bench", "NODE_PROXY_TOKEN=bench-proxy", "NODEAGENT_ADDR=127.0.0.1:0", "NODEPROXY_ADDR=127.0.0.1:0",
		"CONTAINERD_ADDR="+ctrd, "CONTAINERD_NAMESPACE="+a.ctr, "INSTANCE_LOG_DIR="+filepath.Join(a.work, "logs"),
		"REGISTRY_ADDR="+reg, "REGISTRY_INSECURE=true", "NETWORK_NODE_NETNS=/run/netns/"+a.ns, "LOG_LEVEL=info", "LOG_FORMAT=json",
		"NODE_CPU_MILLIS=100000", "NODE_MEMORY_MB=100000")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *agentProc) stop() {
	if a.cmd.ProcessState == nil {
		a.cmd.Process.Signal(os.Interrupt) //nolint:errcheck
		a.cmd.Wait()                       //nolint:errcheck
	}
}

// close stops the agent and everything it started.
func (a *agentProc) close(ctrd string) {
	a.stop()
	ctx := context.Background()
	// The agent labels its containers with its node id; without one it
	// never registered and started nothing.
	if owner, err := nodeagent.StoredID(filepath.Join(a.work, "state")); err == nil {
		if rt, err := runtime.New(ctx, runtime.Config{Address: ctrd, Namespace: a.ctr, Owner: owner.String(), LogDir: filepath.Join(a.work, "logs")}); err == nil {
			list, _ := rt.List(ctx)
			for _, s := range list {
				rt.Stop(ctx, s.InstanceID, time.Second) //nolint:errcheck
			}
			rt.Close()
		}
	}
	benchnode.DeleteNamespace(ctrd, a.ctr)
	benchnode.DeleteInstanceNetns(filepath.Join(a.work, "state"))
	exec.Command("ip", "netns", "delete", a.ns).Run() //nolint:errcheck
}

// deployTimes is one timed deployment: when it was made, when the deploy
// step saw it active, and its instances (to find them in the agents' logs).
type deployTimes struct {
	start, done time.Time
	instances   []string
}

var deploys []deployTimes

func instancesOf(ctx context.Context, pool *pgxpool.Pool, dep uuid.UUID) []string {
	rows, err := pool.Query(ctx, `SELECT id::text FROM instances WHERE deployment_id = $1`, dep)
	if err != nil {
		return nil
	}
	ids, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids
}

// steps reads the agents' logs: for every instance, when it was reported
// seen (the pass that began its create), created, started and healthy, and prints
// the medians of the gaps; and, per deployment, the time before the first
// agent saw one of its instances and after the last was reported healthy.
func steps(agents []*agentProc) {
	type times struct {
		seen, created, started, starting, healthy time.Time
		prepare, network, create                  float64
	}
	all := map[string]*times{}
	for _, a := range agents {
		f, err := os.Open(a.log)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Time       time.Time `json:"time"`
				Msg        string    `json:"msg"`
				InstanceID string    `json:"instance_id"`
				State      string    `json:"state"`
				Prepare    float64   `json:"prepare_ms"`
				Network    float64   `json:"network_ms"`
				Create     float64   `json:"create_ms"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.InstanceID == "" {
				continue
			}
			t := all[l.InstanceID]
			if t == nil {
				t = &times{}
				all[l.InstanceID] = t
			}
			switch {
			case l.Msg == "instance set up":
				// Logged once the container is created, with how long each
				// part took since the pass began the instance's create.
				t.prepare, t.network, t.create = l.Prepare, l.Network, l.Create
				t.seen = l.Time.Add(-time.Duration((l.Prepare + l.Network + l.Create) * float64(time.Millisecond)))
			case l.Msg == "instance created":
				t.created = l.Time
			case l.Msg == "instance started":
				t.started = l.Time
			case l.Msg == "instance state" && l.State == "starting":
				t.starting = l.Time
			case l.Msg == "instance state" && l.State == "healthy":
				t.healthy = l.Time
			}
		}
		f.Close()
	}
	var pc, cs, sh, ss, prep, netw, crea []time.Duration
	for _, t := range all {
		if t.seen.IsZero() || t.created.IsZero() || t.started.IsZero() || t.healthy.IsZero() {
			continue
		}
		pc = append(pc, t.created.Sub(t.seen))
		cs = append(cs, t.started.Sub(t.created))
		sh = append(sh, t.healthy.Sub(t.started))
		if !t.starting.IsZero() {
			ss = append(ss, t.starting.Sub(t.started))
		}
		if t.create > 0 { // agents that log "instance set up"
			prep = append(prep, time.Duration(t.prepare*float64(time.Millisecond)))
			netw = append(netw, time.Duration(t.network*float64(time.Millisecond)))
			crea = append(crea, time.Duration(t.create*float64(time.Millisecond)))
		}
	}
	med := func(d []time.Duration) string {
		if len(d) == 0 {
			return "—"
		}
		slices.Sort(d)
		return benchnode.Ms(d[len(d)/2])
	}
	fmt.Printf("| inside the agents (%d instances, medians) | |\n|---|---|\n", len(pc))
	fmt.Printf("| pass sees it → container created (image check, network, create) | %s |\n", med(pc))
	fmt.Printf("| … of which: image check, variables | %s |\n", med(prep))
	fmt.Printf("| … of which: network (namespace, veth, addresses, nftables) | %s |\n", med(netw))
	fmt.Printf("| … of which: containerd create | %s |\n", med(crea))
	fmt.Printf("| created → started | %s |\n", med(cs))
	fmt.Printf("| started → reported healthy | %s |\n", med(sh))
	fmt.Printf("| … of which: started → reported starting | %s |\n", med(ss))

	var seen, activated []time.Duration
	for _, d := range deploys {
		var first, last time.Time
		for _, iid := range d.instances {
			t := all[iid]
			if t == nil || t.seen.IsZero() || t.healthy.IsZero() {
				continue
			}
			if first.IsZero() || t.seen.Before(first) {
				first = t.seen
			}
			if t.healthy.After(last) {
				last = t.healthy
			}
		}
		if !first.IsZero() {
			seen = append(seen, first.Sub(d.start))
			activated = append(activated, d.done.Sub(last))
		}
	}
	fmt.Printf("| per deployment (%d, medians): made → an agent's pass sees its first instance (placement, wake-up) | %s |\n", len(seen), med(seen))
	fmt.Printf("| per deployment: last instance reported healthy → the deploy step sees it active | %s |\n", med(activated))
}

func waitNodes(ctx context.Context, pool *pgxpool.Pool, n int) error {
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		list, err := node.Store{DB: pool}.List(ctx)
		if err == nil && len(list) == n {
			return nil
		}
	}
	return fmt.Errorf("the agents never registered")
}

func project(ctx context.Context, pool *pgxpool.Pool, repo, digest, tag string) (proj, img uuid.UUID, err error) {
	org := id.New()
	proj, img = id.New(), id.New()
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Bench')`, []any{org, "bench-" + tag}},
		{`INSERT INTO projects (id, organisation_id, slug, name, health_check_path, cpu_millis, memory_mb) VALUES ($1, $2, $3, 'Bench', '/healthz', 100, 64)`, []any{proj, org, "bench-" + tag}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'bench', $4)`, []any{img, proj, repo, digest}},
	} {
		if _, err := pool.Exec(ctx, s.q, s.args...); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
	}
	return proj, img, nil
}

func appImage(ctx context.Context, work, reg, bkAddr string) (string, string, error) {
	dir := filepath.Join(work, "image")
	os.MkdirAll(dir, 0o755) //nolint:errcheck
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), ".")
	build.Dir = "internal/nodeagent/testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build app: %v %s", err, out)
	}
	img, err := builder.BuildKit{Addr: bkAddr}.Build(ctx, builder.Request{
		ContextDir: dir, Dockerfile: []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n"),
		Repository: "zeitwork-bench/app", Tag: "d" + id.New().String()[30:], Registry: builder.Registry{Host: reg, Insecure: true},
	}, io.Discard)
	return img.Repository, img.Digest, err
}
