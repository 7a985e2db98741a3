// Command nodeagent measures the node agent as a separate process on the
// real stack (containerd + runc, the nftables policy, Postgres):
//
//   - time from "instance assigned" (row written) to "healthy", with the
//     image not yet on the node and with it cached;
//   - the same, 50 instances at once, and so instances converged per second;
//   - the agent's memory (RSS) at rest and with 50 instances;
//   - the reference: the runtime alone (pull + create + start + first HTTP
//     answer, no database, no network policy), in the same run.
//
// Run it with bench/nodeagent/run.sh (root, after scripts/deps.sh up).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/bench/internal/benchnode"
	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// logWriter is the agent's instance log writer, which the runtime alone
// uses too.
var logWriter string

func main() {
	bin := flag.String("zeitwork", "", "path to the zeitwork binary (zeitwork-logwriter beside it is used)")
	adminURL := flag.String("db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	reg := flag.String("registry", "127.0.0.1:25000", "registry")
	bk := flag.String("buildkit", "unix:///run/zeitwork-dev/buildkitd.sock", "buildkitd")
	ctrd := flag.String("containerd", "/run/zeitwork-dev/containerd.sock", "containerd socket")
	n := flag.Int("n", 50, "instances in the batch")
	flag.BoolVar(&referenceOnly, "reference-only", false, "measure the runtime alone and stop")
	agentLog = flag.String("agent-log", "warn", "the agent's LOG_LEVEL (info: where each instance's start went, on stderr)")
	flag.Parse()
	logWriter = logwriter.Beside(*bin)
	if err := run(*bin, *adminURL, *reg, *bk, *ctrd, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin, adminURL, reg, bkAddr, ctrd string, batch int) error {
	ctx := context.Background()
	tag := id.New().String()[30:]
	work, err := os.MkdirTemp("", "zw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// A database of its own, migrated by the binary under test.
	dbName := "zw_bench_" + tag
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		return err
	}
	defer admin.Exec(context.Background(), "DROP DATABASE "+dbName+" WITH (FORCE)") //nolint:errcheck
	dbURL := strings.Replace(adminURL, "/zeitwork?", "/"+dbName+"?", 1)
	if out, err := exec.Command(bin, "migrate").CombinedOutput(); err != nil && !strings.Contains(string(out), "DATABASE_URL") {
		return fmt.Errorf("migrate: %v %s", err, out)
	}
	mig := exec.Command(bin, "migrate")
	mig.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	if out, err := mig.CombinedOutput(); err != nil {
		return fmt.Errorf("migrate: %v %s", err, out)
	}

	// The app image, built here and pushed to the local registry.
	repo, digest, err := appImage(ctx, work, reg, bkAddr)
	if err != nil {
		return err
	}
	ref := repo + "@" + digest

	// Reference: the runtime alone.
	refCold, refWarm, refMany, err := runtimeAlone(ctx, ctrd, reg, ref, work, tag, batch)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	if referenceOnly {
		fmt.Printf("runtime alone: cold %s warm %s, %d at once %s, machine CPU per instance %s\n", refCold, refWarm, batch, refMany, refCPU)
		return nil
	}

	// The node: a network namespace of its own, and the agent as a process.
	ns := "zwb" + tag
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("netns: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()         //nolint:errcheck
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run() //nolint:errcheck
	ctrNS := "zw-bench-" + tag
	agent := exec.Command(bin, "nodeagent")
	agent.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL, "NODE_INTERNAL_ADDRESS=127.0.0.1:1"+tag[:4], "NODE_STATE_DIR="+filepath.Join(work, "state"),
		"CLUSTER_TOKEN=bench", "NODE_PROXY_TOKEN=bench-proxy", "NODEAGENT_ADDR=127.0.0.1:0", "NODEPROXY_ADDR=127.0.0.1:0",
		"CONTAINERD_ADDR="+ctrd, "CONTAINERD_NAMESPACE="+ctrNS, "INSTANCE_LOG_DIR="+filepath.Join(work, "logs"),
		"REGISTRY_ADDR="+reg, "REGISTRY_INSECURE=true", "NETWORK_NODE_NETNS=/run/netns/"+ns, "LOG_LEVEL="+*agentLog, "NODE_CPU_MILLIS=100000", "NODE_MEMORY_MB=100000")
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	if err := agent.Start(); err != nil {
		return err
	}
	defer cleanup(ctrd, ctrNS, work, agent)

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	node, err := waitNode(ctx, pool)
	if err != nil {
		return err
	}
	dep, err := deployment(ctx, pool, repo, digest, tag)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	rssRest := rss(agent.Process.Pid)

	cold, err := timeHealthy(ctx, pool, node, dep, 1)
	if err != nil {
		return fmt.Errorf("cold: %w", err)
	}
	warm, err := timeHealthy(ctx, pool, node, dep, 1)
	if err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	cpu := benchnode.CPU()
	many, err := timeHealthy(ctx, pool, node, dep, batch)
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	agentCPU := (benchnode.CPU() - cpu) / time.Duration(batch)
	rssBusy := rss(agent.Process.Pid)

	fmt.Printf("| measurement | node agent | runtime alone (reference) |\n|---|---|---|\n")
	fmt.Printf("| assigned → healthy, image not on the node | %s | %s |\n", benchnode.Ms(cold), benchnode.Ms(refCold))
	fmt.Printf("| assigned → healthy, image cached | %s | %s |\n", benchnode.Ms(warm), benchnode.Ms(refWarm))
	fmt.Printf("| %d instances assigned at once → all healthy | %s (%.1f instances/s) | %s |\n", batch, benchnode.Ms(many), float64(batch)/many.Seconds(), benchnode.Ms(refMany))
	fmt.Printf("| machine CPU time per instance in that batch (every process: containerd, shims, runc, agent, Postgres, this bench) | %s | %s |\n", benchnode.Ms(agentCPU), benchnode.Ms(refCPU))
	fmt.Printf("| agent memory (RSS) at rest / with %d instances | %d MiB / %d MiB | — |\n", batch+2, rssRest>>10, rssBusy>>10)
	return nil
}

var (
	agentLog      *string
	referenceOnly bool
	refCPU        time.Duration // the runtime alone's batch, per instance
)

// phases is where the runtime alone's batch spends its time, per instance.
var phases struct {
	sync.Mutex
	create, start, answer []time.Duration
}

func medMax(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return fmt.Sprintf("%s / %s", benchnode.Ms(ds[len(ds)/2]), benchnode.Ms(ds[len(ds)-1]))
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
		Repository: "zeitwork-bench/app", Tag: "b" + id.New().String()[30:], Registry: builder.Registry{Host: reg, Insecure: true},
	}, io.Discard)
	return img.Repository, img.Digest, err
}

// runtimeAlone is the floor: what containerd + runc take for the same image
// with nothing of ours around them but the runtime package.
func runtimeAlone(ctx context.Context, ctrd, reg, ref, work, tag string, batch int) (cold, warm, many time.Duration, err error) {
	ns := "zw-bench-ref-" + tag
	defer benchnode.DeleteNamespace(ctrd, ns)
	rt, err := runtime.New(ctx, runtime.Config{Address: ctrd, Namespace: ns, Owner: "bench", LogDir: filepath.Join(work, "ref-logs"), PlainHTTPRegistries: []string{reg}, LogWriter: logWriter})
	if err != nil {
		return 0, 0, 0, err
	}
	defer rt.Close()
	// once starts an instance and times it up to its first answer; stop
	// removes it. The batch stops its instances only after the slowest
	// answered, as the agent's batch does: stops overlapping the starts
	// would add their work to the floor.
	var stops []uuid.UUID
	once := func(port int, later bool) (time.Duration, error) {
		start := time.Now()
		iid := id.New()
		spec := runtime.Spec{InstanceID: iid, Image: ref, Port: port, HostNetwork: true, MemoryMB: 64, CPUMillis: 100} // as the agent's instances
		if err := rt.Pull(ctx, ref, nil); err != nil {
			return 0, err
		}
		if err := rt.Create(ctx, spec); err != nil {
			return 0, err
		}
		created := time.Now()
		if later {
			phases.Lock()
			stops = append(stops, iid)
			phases.Unlock()
		} else {
			defer rt.Stop(context.Background(), iid, time.Second) //nolint:errcheck
		}
		if err := rt.Start(ctx, iid); err != nil {
			return 0, err
		}
		started := time.Now()
		defer func() {
			phases.Lock()
			defer phases.Unlock()
			phases.create = append(phases.create, created.Sub(start))
			phases.start = append(phases.start, started.Sub(created))
			phases.answer = append(phases.answer, time.Since(started))
		}()
		for time.Since(start) < 2*time.Minute {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
			if err == nil {
				resp.Body.Close()
				return time.Since(start), nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		st, _ := rt.Status(ctx, iid)
		logs, _ := os.ReadFile(filepath.Join(work, "ref-logs", ns, iid.String()+".log"))
		return 0, fmt.Errorf("port %d never answered: %+v; log: %s", port, st, logs)
	}
	if cold, err = once(benchnode.FreePort(), false); err != nil {
		return 0, 0, 0, err
	}
	if warm, err = once(benchnode.FreePort(), false); err != nil {
		return 0, 0, 0, err
	}
	phases.create, phases.start, phases.answer = nil, nil, nil
	// batch at once, each on its own goroutine as the agent would: the
	// floor for the agent's batch. Each is timed up to its answer, before
	// its stop; the batch takes as long as the slowest.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	ports := make([]int, batch)
	for i := range ports {
		ports[i] = benchnode.FreePort()
	}
	cpu := benchnode.CPU()
	for i := range batch {
		wg.Go(func() {
			d, err := once(ports[i], true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			many = max(many, d)
		})
	}
	wg.Wait()
	refCPU = (benchnode.CPU() - cpu) / time.Duration(batch)
	for _, iid := range stops {
		wg.Go(func() { rt.Stop(context.Background(), iid, time.Second) }) //nolint:errcheck
	}
	wg.Wait()
	phases.Lock()
	fmt.Fprintf(os.Stderr, "runtime alone, %d at once: pull+create %s, start %s, started → answers %s (median / max)\n",
		batch, medMax(phases.create), medMax(phases.start), medMax(phases.answer))
	phases.Unlock()
	_ = rt.RemoveImage(ctx, ref)
	if len(errs) > 0 {
		return 0, 0, 0, errs[0]
	}
	return cold, warm, many, nil
}

func waitNode(ctx context.Context, pool *pgxpool.Pool) (node.Node, error) {
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		nodes, err := node.Store{DB: pool}.List(ctx)
		if err == nil && len(nodes) == 1 {
			return nodes[0], nil
		}
	}
	return node.Node{}, fmt.Errorf("the agent never registered")
}

func deployment(ctx context.Context, pool *pgxpool.Pool, repo, digest, tag string) (uuid.UUID, error) {
	org, proj, img, dep := id.New(), id.New(), id.New(), id.New()
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Bench')`, []any{org, "bench-" + tag}},
		{`INSERT INTO projects (id, organisation_id, slug, name, health_check_path) VALUES ($1, $2, $3, 'Bench', '/healthz')`, []any{proj, org, "bench-" + tag}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'bench', $4)`, []any{img, proj, repo, digest}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, []any{dep, proj, img}},
	} {
		if _, err := pool.Exec(ctx, s.q, s.args...); err != nil {
			return uuid.Nil, err
		}
	}
	return dep, nil
}

// timeHealthy assigns n instances to the node and times until all are healthy.
func timeHealthy(ctx context.Context, pool *pgxpool.Pool, on node.Node, dep uuid.UUID, n int) (time.Duration, error) {
	// The agent notifies when an instance becomes healthy or fails (what
	// the operator's deploy step waits on): the batch is read again on
	// each notification, and every 100 ms underneath. Polling its rows
	// every 5 ms took 8–10 % of the machine's CPU during the batch (the
	// bench and Postgres), from the agent it measures.
	listen, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer listen.Release()
	if _, err := listen.Exec(ctx, "LISTEN "+instance.StatesChannel); err != nil {
		return 0, err
	}
	defer listen.Exec(context.Background(), "UNLISTEN *") //nolint:errcheck
	start := time.Now()
	var ids []uuid.UUID
	instances := instance.Store{DB: pool}
	for range n {
		in, err := instances.Create(ctx, on, instance.New{DeploymentID: dep, Port: 8080, CPUMillis: 100, MemoryMB: 64})
		if err != nil {
			return 0, err
		}
		ids = append(ids, in.ID)
	}
	want := map[uuid.UUID]bool{}
	for _, iid := range ids {
		want[iid] = true
	}
	for time.Since(start) < 5*time.Minute {
		all, err := instances.List(ctx, instance.Filter{DeploymentID: &dep, Limit: n + 10})
		if err != nil {
			return 0, err
		}
		healthy := 0
		for _, in := range all {
			if !want[in.ID] {
				continue
			}
			if in.State == instance.StateFailed {
				return 0, fmt.Errorf("instance %s failed: %v", in.ID, in.StateReason)
			}
			if in.State == instance.StateHealthy {
				healthy++
			}
		}
		if healthy == n {
			return time.Since(start), nil
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err = listen.Conn().WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("not all healthy after 5 minutes")
}

func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// cleanup stops the agent and everything it started.
func cleanup(ctrd, ctrNS, work string, agent *exec.Cmd) {
	agent.Process.Signal(os.Interrupt) //nolint:errcheck
	agent.Wait()                       //nolint:errcheck
	defer benchnode.DeleteInstanceNetns(filepath.Join(work, "state"))
	ctx := context.Background()
	// The agent labels its containers with its node id, kept in its state dir.
	owner, err := nodeagent.StoredID(filepath.Join(work, "state"))
	if err != nil {
		return // it never registered: it started nothing
	}
	rt, err := runtime.New(ctx, runtime.Config{Address: ctrd, Namespace: ctrNS, Owner: owner.String(), LogDir: filepath.Join(work, "logs")})
	if err != nil {
		return
	}
	defer rt.Close()
	list, _ := rt.List(ctx)
	for _, s := range list {
		rt.Stop(ctx, s.InstanceID, time.Second) //nolint:errcheck
	}
	rt.Close()
	benchnode.DeleteNamespace(ctrd, ctrNS)
	_ = netip.Addr{}
	_ = ipam.DefaultCluster
}
