// Command pickup measures how long a task waits between its insert and
// its worker starting (internal/queue, configured as the builder and the
// operator configure it, on its own database of the local Postgres), and
// prints a Markdown table:
//
//   - each run first leaves the workers idle for -idle (5 minutes by
//     default: a build task once waited 17 s to be picked after the
//     builder had been quiet), then inserts -tasks tasks one at a time,
//     each -gap after the previous one was picked, alternating between the
//     builders' queue and the operators' (a build task, a deploy task),
//     each worked by its own client as the builder and operator processes
//     do. The first task of each queue after the idle is reported on its
//     own, and each queue's tasks together as p50/p95/max.
//   - reference, alternating with the tasks in the same run: a bare
//     LISTEN/NOTIFY round trip on the same Postgres (NOTIFY on one
//     connection, received on another that has LISTENed since the run
//     began), which is the floor under any wake-up River can do.
//
// The workers and the inserter are separate River clients on separate
// pools, as the builder, operator and API processes are. A task's time
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
	"github.com/zeitwork/zeitwork/internal/operator"
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

// buildTask and deployTask are the timed tasks: nothing to do, on the
// builders' and the operators' queue.
type buildTask struct {
	Seq int `json:"seq"`
}

func (buildTask) Kind() string { return "bench_pickup_build" }

func (buildTask) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: build.Queue} }

type deployTask struct {
	Seq int `json:"seq"`
}

func (deployTask) Kind() string { return "bench_pickup_deploy" }

func (deployTask) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: operator.Queue} }

// recorder notes when it starts each task.
type recorder[T queue.Task] struct {
	river.WorkerDefaults[T]
	picks chan<- pick
	seq   func(T) int
}

type pick struct {
	seq int
	at  time.Time
}

func (r *recorder[T]) Work(_ context.Context, job *queue.Job[T]) error {
	r.picks <- pick{seq: r.seq(job.Args), at: time.Now()}
	return nil
}

// queues are the two timed queues, in the order the tasks alternate.
var queues = []string{"build", "deploy"}

// result is one run.
type result struct {
	first    map[string]time.Duration // each queue's first task after the idle
	firstRef time.Duration
	tasks    map[string][]time.Duration
	refs     []time.Duration
}

func run(ctx context.Context, o options) error {
	dbURL, drop, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "pickup")
	if err != nil {
		return err
	}
	defer drop()
	cfg, err := config.ParseFrom[config.Queue](map[string]string{})
	if err != nil {
		return err
	}
	picks := make(chan pick, 1)
	// A worker per queue, each its own client on its own pool: the builder
	// and the operator processes.
	for _, w := range []*queue.Workers{
		func() *queue.Workers {
			ws := queue.NewWorkers(build.Queue)
			queue.Register(ws, &recorder[buildTask]{picks: picks, seq: func(t buildTask) int { return t.Seq }})
			return ws
		}(),
		func() *queue.Workers {
			ws := queue.NewWorkers(operator.Queue)
			queue.Register(ws, &recorder[deployTask]{picks: picks, seq: func(t deployTask) int { return t.Seq }})
			return ws
		}(),
	} {
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		worker, err := queue.New(pool, w, cfg, zlog.Discard())
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
	}
	insertPool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer insertPool.Close()
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

	// Untimed: the first tasks and notification warm the connections.
	for i := range queues {
		if _, err := timeTask(ctx, insertPool, inserter, picks, i-len(queues)); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
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
		res := result{first: map[string]time.Duration{}, tasks: map[string][]time.Duration{}}
		for i := range o.tasks {
			if i > 0 {
				if err := sleep(ctx, o.gap); err != nil {
					return err
				}
			}
			d, err := timeTask(ctx, insertPool, inserter, picks, 2*r*o.tasks+i) // even: build, odd: deploy
			if err != nil {
				return err
			}
			ref, err := timeNotify(ctx, notify, listen)
			if err != nil {
				return err
			}
			q := queues[i%len(queues)]
			if i < len(queues) {
				res.first[q] = d
			}
			if i == 0 {
				res.firstRef = ref
			}
			res.tasks[q], res.refs = append(res.tasks[q], d), append(res.refs, ref)
		}
		for _, q := range queues {
			fmt.Fprintf(os.Stderr, "bench/pickup: run %d: %s: first after idle %s; p50 %s p95 %s max %s\n",
				r+1, q, ms(res.first[q]), ms(pct(res.tasks[q], 50)), ms(pct(res.tasks[q], 95)), ms(slices.Max(res.tasks[q])))
		}
		fmt.Fprintf(os.Stderr, "bench/pickup: run %d: reference: first after idle %s; p50 %s p95 %s max %s\n",
			r+1, ms(res.firstRef), ms(pct(res.refs, 50)), ms(pct(res.refs, 95)), ms(slices.Max(res.refs)))
		results = append(results, res)
	}
	report(o, results)
	return nil
}

// timeTask inserts one task, on the build queue for an even seq and the
// deploy queue for an odd one, and waits for its worker to start it.
func timeTask(ctx context.Context, pool *pgxpool.Pool, q *queue.Queue, picks <-chan pick, seq int) (time.Duration, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // a no-op after Commit
	var t queue.Task = buildTask{Seq: seq}
	if seq%2 != 0 {
		t = deployTask{Seq: seq}
	}
	if _, err := q.EnqueueTx(ctx, tx, t); err != nil {
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
	fmt.Fprintf(&b, "\nTask pickup: %d runs, each after %s idle, %d tasks %s apart alternating build and deploy (min / median / max over the runs)\n\n", len(rs), o.idle, o.tasks, o.gap)
	fmt.Fprintln(&b, "| measure | build task inserted → worker started | deploy task inserted → worker started | reference: LISTEN/NOTIFY round trip |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	row := func(name string, f func([]time.Duration) time.Duration, first bool) {
		fmt.Fprintf(&b, "| %s ", name)
		for _, q := range queues {
			if first {
				fmt.Fprintf(&b, "| %s ", three(func(r result) time.Duration { return r.first[q] }))
			} else {
				fmt.Fprintf(&b, "| %s ", three(func(r result) time.Duration { return f(r.tasks[q]) }))
			}
		}
		if first {
			fmt.Fprintf(&b, "| %s |\n", three(func(r result) time.Duration { return r.firstRef }))
		} else {
			fmt.Fprintf(&b, "| %s |\n", three(func(r result) time.Duration { return f(r.refs) }))
		}
	}
	row("first after the idle", nil, true)
	row("p50", func(ds []time.Duration) time.Duration { return pct(ds, 50) }, false)
	row("p95", func(ds []time.Duration) time.Duration { return pct(ds, 95) }, false)
	row("max", func(ds []time.Duration) time.Duration { return slices.Max(ds) }, false)
	fmt.Print(b.String())
}
