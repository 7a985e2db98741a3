package queue_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// childDBEnv, when set, turns the test binary into a worker process that
// dies in the middle of a task (see TestTaskRunsAgainAfterWorkerDies).
const childDBEnv = "ZEITWORK_QUEUE_CHILD_DB"

func TestMain(m *testing.M) {
	if url := os.Getenv(childDBEnv); url != "" {
		os.Exit(dyingWorker(url))
	}
	flag.Parse()
	os.Exit(m.Run())
}

type echoTask struct{ Value string }

func (echoTask) Kind() string { return "test_echo" }

type echoWorker struct {
	river.WorkerDefaults[echoTask]
	ran chan string
}

func (w *echoWorker) Work(_ context.Context, job *queue.Job[echoTask]) error {
	w.ran <- job.Args.Value
	return nil
}

func testConfig() config.Queue {
	return config.Queue{Workers: 2, JobTimeout: 500 * time.Millisecond, RescueAfter: time.Second}
}

func start(t *testing.T, pool *pgxpool.Pool, ws *queue.Workers) *queue.Queue {
	t.Helper()
	q, err := queue.New(pool, ws, testConfig(), zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return q
}

func TestEnqueueIsTransactional(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	ws := queue.NewWorkers()
	w := &echoWorker{ran: make(chan string, 10)}
	queue.Register(ws, w)
	q := start(t, pool, ws)

	enqueue := func(value string, commit bool) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.EnqueueTx(ctx, tx, echoTask{Value: value}); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The rolled-back task goes in first: if rollback leaked it, it would
	// run before (or with) the committed one.
	enqueue("rolled-back", false)
	enqueue("committed", true)

	select {
	case got := <-w.ran:
		if got != "committed" {
			t.Fatalf("worker ran %q, want committed", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("committed task never ran")
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'Value' = 'rolled-back'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("rolled-back task left %d rows in river_job", n)
	}
	select {
	case got := <-w.ran:
		t.Fatalf("worker ran a second task %q", got)
	default:
	}
}

type crashTask struct{ Note string }

func (crashTask) Kind() string { return "test_crash" }

// crashWorker dies on the first attempt, taking its whole process with it,
// as a builder does when its machine goes away.
type crashWorker struct {
	river.WorkerDefaults[crashTask]
	ran chan int
}

func (w *crashWorker) Work(_ context.Context, job *queue.Job[crashTask]) error {
	if w.ran == nil {
		fmt.Println("dying mid-task")
		os.Exit(7)
	}
	w.ran <- job.Attempt
	return nil
}

func dyingWorker(url string) int {
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ws := queue.NewWorkers()
	queue.Register(ws, &crashWorker{})
	q, err := queue.New(pool, ws, testConfig(), zlog.Discard())
	if err == nil {
		err = q.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	time.Sleep(60 * time.Second) // the worker exits the process long before
	fmt.Fprintln(os.Stderr, "the task never ran")
	return 1
}

func TestTaskRunsAgainAfterWorkerDies(t *testing.T) {
	url := testdb.NewURL(t)
	pool := testdb.Pool(t, url)
	ctx := context.Background()

	inserter, err := queue.New(pool, nil, testConfig(), zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	jobID, err := inserter.Enqueue(ctx, crashTask{Note: "build"})
	if err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), childDBEnv+"="+url)
	out, err := child.CombinedOutput()
	if code := child.ProcessState.ExitCode(); code != 7 || !strings.Contains(string(out), "dying mid-task") {
		t.Fatalf("worker process exited %d (%v), want 7 mid-task:\n%s", code, err, out)
	}
	st, err := inserter.Status(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != rivertype.JobStateRunning || st.Attempt != 1 || st.AttemptedAt == nil {
		t.Fatalf("after the worker died the task is %+v, want running on attempt 1", st)
	}

	// River rescues tasks that have been running longer than RescueAfter;
	// start the survivor once that much time has passed, so that its first
	// rescue pass (made at start) already finds the task.
	time.Sleep(time.Until(st.AttemptedAt.Add(testConfig().RescueAfter + 100*time.Millisecond)))
	ws := queue.NewWorkers()
	w := &crashWorker{ran: make(chan int, 1)}
	queue.Register(ws, w)
	start(t, pool, ws)

	select {
	case attempt := <-w.ran:
		if attempt != 2 {
			t.Fatalf("rescued task ran as attempt %d, want 2", attempt)
		}
	case <-time.After(60 * time.Second):
		st, _ := inserter.Status(ctx, jobID)
		t.Fatalf("task was never run again; it is %+v", st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := inserter.Status(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == rivertype.JobStateCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task is %+v after its second run, want completed", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type aTask struct{ N int }

func (aTask) Kind() string                 { return "test_a" }
func (aTask) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: "qa"} }

type bTask struct{ N int }

func (bTask) Kind() string                 { return "test_b" }
func (bTask) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: "qb"} }

type aWorker struct {
	river.WorkerDefaults[aTask]
	ran chan int
}

func (w *aWorker) Work(_ context.Context, j *queue.Job[aTask]) error { w.ran <- j.Attempt; return nil }

type bWorker struct {
	river.WorkerDefaults[bTask]
	ran chan int
}

func (w *bWorker) Work(_ context.Context, j *queue.Job[bTask]) error { w.ran <- j.Attempt; return nil }

// TestRolesWorkOnlyTheirOwnQueues: two roles on one database each take only
// the tasks they have workers for, on the first attempt — none is picked up
// by the wrong role and bounced back with an "unhandled kind" error.
func TestRolesWorkOnlyTheirOwnQueues(t *testing.T) {
	pool := testdb.New(t)
	wa, wb := queue.NewWorkers("qa"), queue.NewWorkers("qb")
	a, b := &aWorker{ran: make(chan int, 20)}, &bWorker{ran: make(chan int, 20)}
	queue.Register(wa, a)
	queue.Register(wb, b)
	qa, qb := start(t, pool, wa), start(t, pool, wb)
	for i := range 10 {
		if _, err := qa.Enqueue(context.Background(), bTask{N: i}); err != nil {
			t.Fatal(err)
		}
		if _, err := qb.Enqueue(context.Background(), aTask{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []chan int{a.ran, b.ran} {
		for range 10 {
			select {
			case attempt := <-ch:
				if attempt != 1 {
					t.Fatalf("a task ran on attempt %d: another role took it first", attempt)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("a task never ran")
			}
		}
	}
}
