// Command edge benchmarks the edge proxy on this machine, with
// nginx as the reference, and prints a Markdown table:
//
//   - the same backend behind `zeitwork edge` (once per data path,
//     EDGE_DATA_PATH=stdlib and fast), behind a bare valyala/fasthttp
//     proxy (bench/edge/fasthttpproxy, -fasthttp) and behind nginx, the
//     same wrk run against each, one after the other, rotating the order
//     over several rounds: requests/s, p50/p99 latency, the proxy's CPU
//     time and context switches per request, and the ratios; then each at
//     half of nginx's saturation rate, with the backend asked directly as
//     the reference, for the latency a proxy adds;
//   - the same over HTTPS: the edge terminating TLS (loop, whose
//     HTTP/1.1 over TLS 1.3 runs on the event loops after the handshake;
//     fast, on a goroutine per connection; and stdlib) against nginx with
//     ssl on, one certificate for all (-tls);
//   - the same over HTTP/2 with h2load (-h2): the edge's own HTTP/2
//     server (loop) and net/http's (stdlib);
//   - route lookup time with 100,000 projects (the Go benchmarks of
//     internal/edge, run by run.sh and parsed here), and the table's build
//     time and heap, measured here;
//   - time from a route change committed in the database to the edge
//     using it (LISTEN/NOTIFY only: the edge's poll is one minute), with
//     one project and again with 100,000 in the database (a fifth as many
//     changes: each rebuild takes seconds), what one rebuild costs then,
//     and the edge's memory with each.
//
// Each proxy makes one hop to the backend: the nodes' internal_address is
// the backend itself, not a node-proxy. Run it with bench/edge/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
)

// tableProjects is the route table size measured in this process.
const tableProjects = 100_000

// options are the benchmark's parameters, all printed with the results.
type options struct {
	zeitwork, backend string // binaries
	fasthttp          string // the fasthttp proxy's binary (bench/edge/fasthttpproxy; empty: not measured)
	adminURL          string
	goBench           string // output of go test -bench for the route table
	rounds            int
	threads, conns    int
	duration, warmup  time.Duration
	changes           int      // route changes timed
	hosts             int      // projects loaded for the at-scale measurements (0: skip)
	profile           string   // where perf writes the fast path's profile (empty: none)
	memory            bool     // only the route table at scale: memory, rebuild, snapshot
	memoryEnv         string   // extra environment of the edge in -memory mode
	fastEnv           string   // extra environment of a further fast-path edge (empty: none)
	loopEnv           []string // extra environments of further loop edges, one each
	memProfile        string   // in -memory mode: where to write the allocations of a full rebuild
	plain, tls, h2    bool     // run the plain HTTP comparison (and all that follows it), the HTTPS one, the HTTP/2 one
	app               string   // the app behind the proxies: appGo (bench/edge/backend) or appNginx
	paths             []string // the edge's data paths compared over plain HTTP, in order
	fields            bool     // also compare nginx setting the edge's request fields
}

// The app behind the proxies. Go's is the default: a Go program answering
// from net/http, as the node-proxy in front of every instance is. nginx
// answering from its config is an app with no Go runtime of its own, to
// tell what the proxy costs from how two Go runtimes share two cores.
const (
	appGo    = "go"
	appNginx = "nginx"
)

// The edge under test, once per data path (EDGE_DATA_PATH), and the
// fasthttp proxy (bench/edge/fasthttpproxy), the data path not taken.
const (
	edgeStdlib = "edge (stdlib)"
	edgeFast   = "edge (fast)"
	edgeLoop   = "edge (loop)"
	fasthttpPx = "fasthttp (bare)"
	// nginxHeaders is nginx setting the request fields the edge sets.
	nginxHeaders = "nginx (edge's fields)"
)

// edgeNames names each data path's column.
var edgeNames = map[string]string{"stdlib": edgeStdlib, "fast": edgeFast, "loop": edgeLoop}

// parsePaths reads -paths: data paths the edge has, none twice.
func parsePaths(s string) ([]string, error) {
	var paths []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch {
		case edgeNames[p] == "":
			return nil, fmt.Errorf("-paths: %q is not a data path of the edge (stdlib, fast, loop)", p)
		case slices.Contains(paths, p):
			return nil, fmt.Errorf("-paths: %s given twice", p)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func main() {
	var o options
	flag.StringVar(&o.zeitwork, "zeitwork", "", "path to the zeitwork binary")
	flag.StringVar(&o.backend, "backend", "", "path to the backend binary (bench/edge/backend)")
	flag.StringVar(&o.fasthttp, "fasthttp", "", "path to the fasthttp proxy binary (bench/edge/fasthttpproxy; empty: not measured)")
	flag.StringVar(&o.adminURL, "db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	flag.StringVar(&o.goBench, "gobench", "", "file with the output of go test -bench 100kHosts ./internal/edge/ (empty: no route table rows)")
	flag.IntVar(&o.rounds, "rounds", 3, "wrk rounds per proxy, alternating which goes first")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.conns, "connections", 64, "wrk connections")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "wrk duration per round (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "wrk warm-up per proxy (whole seconds)")
	flag.IntVar(&o.changes, "changes", 50, "route changes timed")
	flag.IntVar(&o.hosts, "hosts", 100_000, "projects in the database for the at-scale rows (0: skip them)")
	flag.StringVar(&o.profile, "profile", "", "directory for pprof and perf profiles of each Go data path under wrk (empty: none; the zeitwork binary must be built with -tags edgepprof)")
	flag.BoolVar(&o.memory, "memory", false, "measure only the route table at -hosts projects: edge memory over -rounds runs, rebuild, snapshot")
	flag.StringVar(&o.memoryEnv, "memory-env", "", "extra environment of the edge in -memory mode, e.g. \"GOGC=100 GOMEMLIMIT=off\"")
	flag.Func("loop-env", "also measure a loop edge with this extra environment (repeat for more)", func(v string) error {
		o.loopEnv = append(o.loopEnv, v)
		return nil
	})
	flag.StringVar(&o.fastEnv, "fast-env", "", "also measure a fast-path edge with this extra environment, e.g. \"GOMAXPROCS=1\"")
	flag.StringVar(&o.memProfile, "memprofile", "", "in -memory mode, write the allocation profile of a full rebuild in this process here")
	flag.BoolVar(&o.plain, "plain", true, "compare the proxies over plain HTTP, and measure the route table and changes")
	flag.BoolVar(&o.tls, "tls", true, "compare the edge and nginx over HTTPS (needs a zeitwork binary built with -tags edgepprof)")
	flag.BoolVar(&o.h2, "h2", true, "compare the edge and nginx over HTTP/2 with h2load (needs a zeitwork binary built with -tags edgepprof)")
	paths := flag.String("paths", "stdlib,fast,loop", "the edge's data paths compared over plain HTTP (a comma-separated subset of stdlib, fast, loop): fewer paths, more rounds in the same time")
	flag.BoolVar(&o.fields, "fields", true, "over plain HTTP, also compare nginx setting the request fields the edge sets")
	flag.StringVar(&o.app, "app", appGo, "the app behind the proxies: go (the -backend binary, net/http) or nginx (answering from its config)")
	proxyCPUs := flag.String("proxy-cpus", "", "run each proxy on these CPUs only (taskset -c list; with -load-cpus)")
	loadCPUs := flag.String("load-cpus", "", "run wrk and the app on these CPUs only (taskset -c list; with -proxy-cpus)")
	flag.Parse()
	pl, err := parsePlacement(*proxyCPUs, *loadCPUs, runtime.NumCPU())
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/edge:", err)
		os.Exit(2)
	}
	cpus = pl
	if o.paths, err = parsePaths(*paths); err != nil {
		fmt.Fprintln(os.Stderr, "bench/edge:", err)
		os.Exit(2)
	}
	switch {
	case o.app != appGo && o.app != appNginx:
		fmt.Fprintf(os.Stderr, "bench/edge: -app is %q; want go or nginx\n", o.app)
		os.Exit(2)
	case o.app == appNginx && o.profile != "":
		// perf sched groups threads by command name: nginx the app and
		// nginx the proxy would count as one.
		fmt.Fprintln(os.Stderr, "bench/edge: -profile needs -app go")
		os.Exit(2)
	}
	if o.zeitwork == "" || o.backend == "" {
		fmt.Fprintln(os.Stderr, "bench/edge: -zeitwork and -backend are required (use bench/edge/run.sh)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if o.memory {
		err = runMemory(ctx, o)
	} else {
		err = run(ctx, o)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/edge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	bins := []string{"nginx", "wrk"}
	if o.h2 {
		bins = append(bins, "h2load")
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (scripts/deps.sh install puts it there): %w", bin, err)
		}
	}
	var r results
	if o.goBench != "" {
		// Parsed first: a bad file should not cost a whole run.
		t, err := parseGoBench(o.goBench)
		if err != nil {
			return err
		}
		r.table = &t
	}
	// Before anything else, while this process's heap holds nothing else
	// and no other process of ours runs.
	if o.plain {
		r.size = measureTable(tableProjects, []string{"127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003"})
	}

	work, err := os.MkdirTemp("", "zw-bench-edge-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	dbURL, dropDB, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "edge")
	if err != nil {
		return err
	}
	defer dropDB()

	backend, addrs, err := startApp(o, filepath.Join(work, "app"), 3)
	if err != nil {
		return err
	}
	defer backend.stop()

	w, err := newWorld(ctx, dbURL, addrs, filepath.Join(work, "nodes"))
	if err != nil {
		return err
	}
	defer w.close()

	// Over TLS first, each proxy stopped before the plain ones start.
	if o.tls {
		if r.tls, err = compareTLS(ctx, o, work, dbURL, w.host, addrs, backend, false); err != nil {
			return err
		}
	}
	if o.h2 {
		if r.h2, err = compareTLS(ctx, o, work, dbURL, w.host, addrs, backend, true); err != nil {
			return fmt.Errorf("HTTP/2: %w", err)
		}
	}
	if !o.plain {
		report(os.Stdout, o, r)
		return nil
	}

	// Both data paths of the edge (EDGE_DATA_PATH), each its own process.
	startPath := func(name, path, snapshot string, env ...string) (proxy, error) {
		pp := ""
		if o.profile != "" {
			if pp, err = freeAddr(); err != nil {
				return proxy{}, err
			}
			env = append(env, "EDGE_PPROF_ADDR="+pp)
		}
		p, addr, _, err := startEdgeEnv(o.zeitwork, dbURL, filepath.Join(work, snapshot), path, env...)
		return proxy{name: name, addr: addr, p: p, pprof: pp}, err
	}
	var proxies []proxy
	for _, path := range o.paths {
		px, err := startPath(edgeNames[path], path, "routes-"+path+".json")
		if err != nil {
			return err
		}
		defer px.p.stop()
		proxies = append(proxies, px)
	}
	for i, env := range o.loopEnv {
		px, err := startPath("edge (loop, "+env+")", "loop", fmt.Sprintf("routes-loop-env-%d.json", i), strings.Fields(env)...)
		if err != nil {
			return err
		}
		defer px.p.stop()
		proxies = append(proxies, px)
	}
	if o.fastEnv != "" {
		px, err := startPath("edge (fast, "+o.fastEnv+")", "fast", "routes-fast-env.json", strings.Fields(o.fastEnv)...)
		if err != nil {
			return err
		}
		defer px.p.stop()
		proxies = append(proxies, px)
	}
	if o.fasthttp != "" {
		fh, err := startFasthttp(o.fasthttp, w.host, addrs, o.profile != "")
		if err != nil {
			return err
		}
		defer fh.p.stop()
		proxies = append(proxies, fh)
	}
	// nginx sending the app the edge's fields too, so that what the app
	// spends on them is not counted against the edge's data path alone.
	if o.fields {
		ngxH, ngxHAddr, err := startNginx(filepath.Join(work, "nginx-headers"), addrs, edgeHeaders, nil, false)
		if err != nil {
			return err
		}
		defer ngxH.stop()
		proxies = append(proxies, proxy{name: nginxHeaders, addr: ngxHAddr, p: ngxH})
	}
	ngx, ngxAddr, err := startNginx(filepath.Join(work, "nginx"), addrs, nil, nil, false)
	if err != nil {
		return err
	}
	defer ngx.stop()
	proxies = append(proxies, proxy{name: "nginx", addr: ngxAddr, p: ngx})
	// Route changes and the table at scale are measured through the first.
	edge, edgeAddr := proxies[0].p, proxies[0].addr

	for _, px := range proxies {
		if err := waitServes(ctx, px, w.host); err != nil {
			return err
		}
	}
	for i := range proxies {
		proxies[i].backend = backend
	}
	r.names = make([]string, len(proxies))
	for i, px := range proxies {
		r.names[i] = px.name
	}

	if r.load, err = compare(ctx, o, proxies, w.host); err != nil {
		return err
	}
	// Half of nginx's saturation rate, the backend asked directly as well:
	// the latency each proxy adds when it is not the bottleneck.
	direct := proxy{name: "direct", addr: addrs[0], backend: backend}
	r.halfRate = r.load.median("nginx", func(w wrkRun) float64 { return w.rps }) / 2
	if r.half, err = compareAtRate(ctx, o, append(slices.Clone(proxies), direct), w.host, r.halfRate); err != nil {
		return err
	}
	if o.profile != "" {
		if r.profiles, err = profileAll(ctx, o, proxies, w.host, r.half.conns); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	if r.small, err = measureChanges(ctx, w, edgeAddr, o.changes); err != nil {
		return fmt.Errorf("route changes: %w", err)
	}
	r.small.rss = rss(edge.pid())
	if o.hosts > 0 {
		if err := w.loadProjects(ctx, o.hosts); err != nil {
			return fmt.Errorf("load %d projects: %w", o.hosts, err)
		}
		// The load is one transaction, so one rebuild: wait for it.
		if err := waitServes(ctx, proxies[0], w.lastHost); err != nil {
			return fmt.Errorf("after loading %d projects: %w", o.hosts, err)
		}
		if r.large, err = measureChanges(ctx, w, edgeAddr, max(o.changes/5, 5)); err != nil {
			return fmt.Errorf("route changes with %d projects: %w", o.hosts, err)
		}
		if r.largeLoad, err = runWrk(ctx, o, proxies[0], w.lastHost, o.duration); err != nil {
			return fmt.Errorf("with %d projects: %w", o.hosts, err)
		}
		r.large.rss = rss(edge.pid())
		if r.rebuild, err = measureRebuild(ctx, w.pool, work); err != nil {
			return fmt.Errorf("rebuild with %d projects: %w", o.hosts, err)
		}
	}
	for _, px := range proxies {
		if err := px.p.alive(); err != nil {
			return err
		}
	}
	report(os.Stdout, o, r)
	return nil
}
