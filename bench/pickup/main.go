// Command pickup measures how long a task waits between its insert and
// its worker starting (internal/queue, configured as the builder and the
// operator configure it, on its own database of the local Postgres), and
// prints a Markdown table:
//
//   - each run first leaves the worker idle for -idle (5 minutes by
//     default: a build task once waited 17 s to be picked after the
//     builder had been quiet), then inserts -tasks tasks one at a time,
//     each -gap after the previous one was picked. The first task after
//     the idle is reported on its own, and the -tasks together as
//     p50/p95/max.
//   - reference, alternating with the tasks in the same run: a bare
//     LISTEN/NOTIFY round trip on the same Postgres (NOTIFY on one
//     connection, received on another that has LISTENed since the run
//     began), which is the floor under any wake-up River can do.
//
// The worker and the inserter are separate River clients on separate
// pools, as the builder process and the API process are. A task's time
// runs from just before its inserting transaction commits (the moment it
// becomes visible) to the first line of the worker's Work; the
// reference's from just before the NOTIFY to its arrival.
//
// Run it with bench/pickup/run.sh.
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type options struct {
	zeitwork string
	adminURL string
	tasks    int
	runs     int
	idle     time.Duration
	gap      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.zeitwork, "zeitwork", "", "path to the zeitwork binary (it migrates the bench's database)")
	flag.StringVar(&o.adminURL, "db", "postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable", "admin database URL")
	flag.IntVar(&o.tasks, "tasks", 200, "tasks timed per run (and as many reference round trips)")
	flag.IntVar(&o.runs, "runs", 3, "runs, each starting with the idle")
	flag.DurationVar(&o.idle, "idle", 5*time.Minute, "how long the worker sits idle before each run's tasks")
	flag.DurationVar(&o.gap, "gap", 20*time.Millisecond, "pause between one task's pickup and the next insert")
	flag.Parse()
	if o.zeitwork == "" {
		fmt.Fprintln(os.Stderr, "bench/pickup: -zeitwork is required (use bench/pickup/run.sh)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/pickup:", err)
		os.Exit(1)
	}
}

// task is the timed task: nothing to do, on the builders' queue.
type task struct {
	Seq int `json:"seq"`
}

func (task) Kind() string { return "bench_pickup" }

func (task) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: build.Queue} }

// recorder notes when it starts each task.
type recorder struct {
	river.WorkerDefaults[task]
	picks chan<- pick
}

type pick struct {
	seq int
	at  time.Time
}

func (r *recorder) Work(_ context.Context, job *queue.Job[task]) error {
	r.picks <- pick{seq: job.Args.Seq, at: time.Now()}
	return nil
}

// result is one run.
type result struct {
	firstTask, firstRef time.Duration // the first of each after the idle
	tasks, refs         []time.Duration
}

func run(ctx context.Context, o options) error {
	dbURL, drop, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "pickup")
	if err != nil {
		return err
	}
	defer drop()
	// Two pools, as two processes would have.
	workerPool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer workerPool.Close()
	insertPool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer insertPool.Close()
	cfg, err := config.ParseFrom[config.Queue](map[string]string{})
	if err != nil {
		return err
	}
	picks := make(chan pick, 1)
	ws := queue.NewWorkers(build.Queue)
	queue.Register(ws, &recorder{picks: picks})
	worker, err := queue.New(workerPool, ws, cfg, zlog.Discard())
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(sctx)
	}()
	inserter, err := queue.New(insertPool, nil, cfg, zlog.Discard())
	if err != nil {
		return err
	}
	listen, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer listen.Close(context.Background())
	if _, err := listen.Exec(ctx, "LISTEN bench_pickup"); err != nil {
		return err
	}
	notify, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer notify.Close(context.Background())

	// Untimed: the first task and notification warm the connections.
	if _, err := timeTask(ctx, insertPool, inserter, picks, -1); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := timeNotify(ctx, notify, listen); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench/pickup: %d runs: idle %s, then %d tasks %s apart\n", o.runs, o.idle, o.tasks, o.gap)
	var results []result
	for r := range o.runs {
		fmt.Fprintf(os.Stderr, "bench/pickup: run %d: idling %s\n", r+1, o.idle)
		if err := sleep(ctx, o.idle); err != nil {
			return err
		}
		var res result
		for i := range o.tasks {
			if i > 0 {
				if err := sleep(ctx, o.gap); err != nil {
					return err
				}
			}
			d, err := timeTask(ctx, insertPool, inserter, picks, r*o.tasks+i)
			if err != nil {
				return err
			}
			ref, err := timeNotify(ctx, notify, listen)
			if err != nil {
				return err
			}
			if i == 0 {
				res.firstTask, res.firstRef = d, ref
			}
			res.tasks, res.refs = append(res.tasks, d), append(res.refs, ref)
		}
		fmt.Fprintf(os.Stderr, "bench/pickup: run %d: first after idle %s (reference %s); p50 %s p95 %s max %s\n",
			r+1, ms(res.firstTask), ms(res.firstRef), ms(pct(res.tasks, 50)), ms(pct(res.tasks, 95)), ms(slices.Max(res.tasks)))
		results = append(results, res)
	}
	report(o, results)
	return nil
}

// timeTask inserts one task and waits for the worker to start it.
func timeTask(ctx context.Context, pool *pgxpool.Pool, q *queue.Queue, picks <-chan pick, seq int) (time.Duration, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // a no-op after Commit
	if _, err := q.EnqueueTx(ctx, tx, task{Seq: seq}); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	// A minute is far beyond any poll interval: a task not picked by then
	// is lost, and the bench says so rather than waiting for ever.
	select {
	case p := <-picks:
		if p.seq != seq {
			return 0, fmt.Errorf("picked task %d, want %d", p.seq, seq)
		}
		return p.at.Sub(start), nil
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("task %d not picked within a minute", seq)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// timeNotify is one bare LISTEN/NOTIFY round trip.
func timeNotify(ctx context.Context, notify, listen *pgx.Conn) (time.Duration, error) {
	start := time.Now()
	if _, err := notify.Exec(ctx, "NOTIFY bench_pickup"); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := listen.WaitForNotification(wctx); err != nil {
		return 0, fmt.Errorf("reference notification: %w", err)
	}
	return time.Since(start), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// report prints each measure as min / median / max over the runs, task
// against reference.
func report(o options, rs []result) {
	three := func(f func(result) time.Duration) string {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, f(r))
		}
		slices.Sort(ds)
		return fmt.Sprintf("%s / %s / %s", ms(ds[0]), ms(ds[len(ds)/2]), ms(ds[len(ds)-1]))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nTask pickup: %d runs, each after %s idle, %d tasks %s apart (min / median / max over the runs)\n\n", len(rs), o.idle, o.tasks, o.gap)
	fmt.Fprintln(&b, "| measure | task inserted → worker started | reference: LISTEN/NOTIFY round trip |")
	fmt.Fprintln(&b, "|---|---|---|")
	fmt.Fprintf(&b, "| first after the idle | %s | %s |\n", three(func(r result) time.Duration { return r.firstTask }), three(func(r result) time.Duration { return r.firstRef }))
	for _, p := range []int{50, 95} {
		fmt.Fprintf(&b, "| p%d of %d | %s | %s |\n", p, o.tasks, three(func(r result) time.Duration { return pct(r.tasks, p) }), three(func(r result) time.Duration { return pct(r.refs, p) }))
	}
	fmt.Fprintf(&b, "| max of %d | %s | %s |\n", o.tasks, three(func(r result) time.Duration { return slices.Max(r.tasks) }), three(func(r result) time.Duration { return slices.Max(r.refs) }))
	fmt.Print(b.String())
}
