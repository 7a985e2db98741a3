// Command deploy times the user's paths to a live URL on the real
// platform — `zeitwork dev --bare` (API, GitHub emulator, builder,
// operator, edge, three simulated nodes) as its own process on its own
// database, prefix and ports — each against a reference measured in the
// same run, and prints a Markdown table of min / median / max over the
// runs:
//
//   - webhook received → serving: a commit pushed into the emulator's
//     repository, from the API's receipt of the signed push (the
//     delivery's received_at) until the edge answers with the new commit's
//     page. Cold: the commit changes the input of the app's dependency step
//     (BuildKit runs every step of the app again; the base image stays in
//     its cache). Warm: only the page changes (the dependency step is
//     cached). Reference: buildctl building the same directory alone (same
//     buildkitd, same registry cache options as the builder) plus the
//     runtime alone (containerd pull + start + first answer of an instance
//     per node, on a containerd namespace each, at once, as the nodes).
//   - `zeitwork deploy` of an unchanged directory → serving: the CLI
//     process from start to its exit (it exits once the deployment is
//     active) and until the edge answers at the deployment's own host.
//     Reference: the build alone (buildctl on the same unchanged
//     directory) plus the runtime alone: the deployment starts new
//     instances of the same image.
//   - image pushed → deployment active: from the builder's image row to
//     the deployment's active_at, three instances on three nodes, for each
//     deployment above. Reference: the runtime alone with the same image,
//     an instance per node at once.
//
// Task pickup is bench/pickup. Run it with bench/deploy/run.sh (root).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
)

type options struct {
	zeitwork, buildctl           string
	adminURL, registry, buildkit string
	containerd                   string
	runs, nodes                  int
	settle                       bool
	boost                        bool
}

func main() {
	var o options
	flag.StringVar(&o.zeitwork, "zeitwork", "", "path to the zeitwork binary")
	flag.StringVar(&o.buildctl, "buildctl", "", "path to buildctl (the reference)")
	flag.StringVar(&o.adminURL, "db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	flag.StringVar(&o.registry, "registry", "127.0.0.1:25000", "registry")
	flag.StringVar(&o.buildkit, "buildkit", "unix:///run/zeitwork-dev/buildkitd.sock", "buildkitd")
	flag.StringVar(&o.containerd, "containerd", "/run/zeitwork-dev/containerd.sock", "containerd socket")
	flag.IntVar(&o.runs, "runs", 3, "runs of every measurement")
	flag.IntVar(&o.nodes, "nodes", 3, "simulated nodes (the project runs one instance on each)")
	flag.BoolVar(&o.settle, "settle", true, "before each timed deploy, wait until the replaced instances have stopped")
	flag.BoolVar(&o.boost, "start-boost", true, "instances (the platform's and the reference's) start with the runtime's CPU boost (INSTANCE_START_BOOST)")
	flag.Parse()
	if o.zeitwork == "" || o.buildctl == "" {
		fmt.Fprintln(os.Stderr, "bench/deploy: -zeitwork and -buildctl are required (use bench/deploy/run.sh)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/deploy:", err)
		os.Exit(1)
	}
}

// sample is one run of everything.
type sample struct {
	hookCold, hookWarm       timing
	cliDeploy, cliDeployExit time.Duration
	refBuildCold             time.Duration
	refBuildWarm             time.Duration
	refBuildSame             time.Duration
	refRuntime               time.Duration
	pushedToActive           []time.Duration // every deployment of the run
}

// timing is one webhook's way to serving.
type timing struct {
	serving        time.Duration // received → the edge answers the new page
	pushedToActive time.Duration
}

func run(ctx context.Context, o options) error {
	work, err := os.MkdirTemp("", "zw-bench-deploy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dbURL, drop, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "deploy")
	if err != nil {
		return err
	}
	defer drop()
	p, err := startPlatform(ctx, o, dbURL, work)
	if p != nil {
		defer p.stop(o.containerd)
	}
	if err != nil {
		return err
	}
	b, err := newBench(ctx, p, work)
	if err != nil {
		return err
	}
	defer b.close()
	var samples []sample
	for r := range o.runs {
		s, err := b.once(ctx, r)
		if err != nil {
			return fmt.Errorf("run %d: %w", r+1, err)
		}
		fmt.Fprintf(os.Stderr, "bench/deploy: run %d: %+v\n", r+1, s)
		samples = append(samples, s)
	}
	report(o, samples)
	return nil
}

// three is min / median / max of one measure over the runs.
func three(ss []sample, f func(sample) time.Duration) string {
	var ds []time.Duration
	for _, s := range ss {
		ds = append(ds, f(s))
	}
	slices.Sort(ds)
	return fmt.Sprintf("%s / %s / %s", secs(ds[0]), secs(ds[len(ds)/2]), secs(ds[len(ds)-1]))
}

// ratio is the median of platform/reference over the runs.
func ratio(ss []sample, f, ref func(sample) time.Duration) string {
	var rs []float64
	for _, s := range ss {
		if ref(s) > 0 {
			rs = append(rs, float64(f(s))/float64(ref(s)))
		}
	}
	if len(rs) == 0 {
		return "—"
	}
	slices.Sort(rs)
	return fmt.Sprintf("%.2f×", rs[len(rs)/2])
}

func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func report(o options, ss []sample) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nDeploys: %d runs, %d simulated nodes, settle %v, start boost %v, min / median / max (ratio: median of platform ÷ reference)\n\n", len(ss), o.nodes, o.settle, o.boost)
	fmt.Fprintln(&b, "| path | platform | reference | reference is | ratio |")
	fmt.Fprintln(&b, "|---|---|---|---|---|")
	refCold := func(s sample) time.Duration { return s.refBuildCold + s.refRuntime }
	refWarm := func(s sample) time.Duration { return s.refBuildWarm + s.refRuntime }
	row := func(name string, f, ref func(sample) time.Duration, what string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, three(ss, f), three(ss, ref), what, ratio(ss, f, ref))
	}
	row("webhook received → serving, cold build cache", func(s sample) time.Duration { return s.hookCold.serving }, refCold, fmt.Sprintf("buildctl alone + runtime alone (%d instances, a namespace each, at once)", o.nodes))
	row("webhook received → serving, warm build cache", func(s sample) time.Duration { return s.hookWarm.serving }, refWarm, fmt.Sprintf("buildctl alone + runtime alone (%d instances, a namespace each, at once)", o.nodes))
	// A deploy of the same image is still a deployment of its own: new
	// instances start, as after any other build.
	refSame := func(s sample) time.Duration { return s.refBuildSame + s.refRuntime }
	sameIs := fmt.Sprintf("buildctl alone, no change + runtime alone (%d instances at once)", o.nodes)
	row("`zeitwork deploy` unchanged dir → serving", func(s sample) time.Duration { return s.cliDeploy }, refSame, sameIs)
	row("`zeitwork deploy` unchanged dir → CLI exits (active)", func(s sample) time.Duration { return s.cliDeployExit }, refSame, sameIs)
	row(fmt.Sprintf("image pushed → deployment active (%d instances), median of the run's deploys", o.nodes), func(s sample) time.Duration {
		d := slices.Clone(s.pushedToActive)
		slices.Sort(d)
		return d[len(d)/2]
	}, func(s sample) time.Duration { return s.refRuntime }, fmt.Sprintf("runtime alone, %d instances at once: pull + start + first answer", o.nodes))
	fmt.Print(b.String())
}
