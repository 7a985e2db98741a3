// Command api benchmarks the public API (`zeitwork api`, a real process on
// its own database) and prints a Markdown table:
//
//   - webhook accepted → build task picked: signed push deliveries for a
//     project connected to a repository, posted to the API over HTTP; a
//     River worker on the "build" queue (internal/queue, configured as the
//     builder role configures it) records when it picks each build task.
//     The time from the 2xx answer to the pickup, p50/p95 over N
//     deliveries. Reference, alternating with the deliveries in the same
//     run: a trivial task enqueued on the same queue through the same
//     insert-only client the API uses, from its commit to its pickup. The
//     difference is what the webhook path adds to River's own latency.
//   - read endpoints: wrk against GET /v1/projects, /v1/projects/{id} and
//     /v1/deployments?project_id= with an API token, and against GET
//     /v1/health (no credentials, no database) on the same process as the
//     reference; rounds alternate the order. Requests/s, p50, p99, and the
//     API process's CPU time per request.
//
// Run it with bench/api/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
)

// options are the benchmark's parameters, all printed with the results.
type options struct {
	zeitwork         string
	adminURL         string
	deliveries       int
	gap              time.Duration
	rounds           int
	threads, conns   int
	duration, warmup time.Duration
	projects         int
	pickup, reads    bool
}

func main() {
	var o options
	flag.StringVar(&o.zeitwork, "zeitwork", "", "path to the zeitwork binary")
	flag.StringVar(&o.adminURL, "db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	flag.IntVar(&o.deliveries, "deliveries", 100, "push deliveries timed per spacing (and as many reference tasks)")
	flag.DurationVar(&o.gap, "gap", 250*time.Millisecond, "pause before each task in the spaced run (the other run has none)")
	flag.IntVar(&o.rounds, "rounds", 3, "wrk rounds per endpoint, alternating the order")
	flag.IntVar(&o.threads, "threads", 1, "wrk threads")
	flag.IntVar(&o.conns, "connections", 8, "wrk connections")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "wrk duration per round (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "wrk warm-up per endpoint (whole seconds)")
	flag.IntVar(&o.projects, "projects", 20, "projects of the user's organisation (a full first page of GET /v1/projects)")
	flag.BoolVar(&o.pickup, "pickup", true, "measure webhook → build task picked")
	flag.BoolVar(&o.reads, "reads", true, "measure the read endpoints")
	flag.Parse()
	if o.zeitwork == "" {
		fmt.Fprintln(os.Stderr, "bench/api: -zeitwork is required (use bench/api/run.sh)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	dbURL, drop, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "api")
	if err != nil {
		return err
	}
	defer drop()
	w, err := newWorld(ctx, dbURL, o.projects)
	if err != nil {
		return err
	}
	defer w.close()
	api, err := startAPI(o.zeitwork, dbURL)
	if err != nil {
		return err
	}
	defer api.stop()

	var (
		pk []pickup
		rd reads
	)
	if o.pickup {
		fmt.Fprintf(os.Stderr, "bench/api: %d push deliveries against as many reference tasks, twice\n", o.deliveries)
		if pk, err = measurePickup(ctx, w, api.url, o.deliveries, []time.Duration{o.gap, 0}); err != nil {
			return fmt.Errorf("pickup: %w", err)
		}
	}
	if o.reads {
		fmt.Fprintln(os.Stderr, "bench/api: read endpoints")
		if rd, err = measureReads(ctx, o, w, api); err != nil {
			return fmt.Errorf("reads: %w", err)
		}
	}
	report(os.Stdout, o, pk, rd)
	return nil
}
