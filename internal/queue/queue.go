// Package queue is Zeitwork's task queue: River on the one Postgres database.
// A task is enqueued in the same transaction as the rows that need it (a
// webhook's deployment and its build task commit together or not at all),
// any number of role replicas work the queue, and a task whose worker dies
// mid-run is rescued and run again by another.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Task is the arguments of one kind of work. Kind names it in the database,
// so it must never change once tasks of that kind exist.
type Task = river.JobArgs

// Worker does tasks of type T. It is River's interface: embed
// river.WorkerDefaults[T] and implement Work.
type Worker[T Task] = river.Worker[T]

// Job is the task being worked, with its attempt count and id.
type Job[T Task] = river.Job[T]

// Workers is the set of task kinds a role works, and the queues it takes
// them from. Roles that only enqueue (the API) pass none.
type Workers struct {
	w      *river.Workers
	queues []string
	kinds  map[string]bool
	follow bool
}

// NewWorkers returns an empty set working the named queues (the default
// queue when none is named). Each role works its own queue: a client only
// fetches tasks it has workers for, so a builder never picks up (and
// bounces) an operator's deploy task.
func NewWorkers(queues ...string) *Workers {
	if len(queues) == 0 {
		queues = []string{river.QueueDefault}
	}
	return &Workers{w: river.NewWorkers(), queues: queues, kinds: map[string]bool{}}
}

// Register adds the worker for task type T.
func Register[T Task](ws *Workers, w Worker[T]) {
	river.AddWorker(ws.w, w)
	var zero T
	ws.kinds[zero.Kind()] = true
}

// Follow keeps the role out of the queue's leader election: it works its
// tasks, but never runs the maintenance the leader does (rescuing stuck
// tasks, moving retries and scheduled tasks to available). Builders
// follow and operators lead, so a task is rescued by the same rule
// whichever replicas happen to be up (see Rescuable); with no operator
// running, nothing is rescued or retried until one starts.
func (ws *Workers) Follow() {
	ws.follow = true
}

// Queue enqueues tasks and, when it has workers, works them.
type Queue struct {
	client  *river.Client[pgx.Tx]
	working bool
}

// fetchCooldown is the least time between two fetches of one worker's
// queue, and between two wake-ups an inserting client sends for a queue.
const fetchCooldown = time.Millisecond

// fetchPollInterval is how often a worker looks for tasks unprompted: the
// safety net under a lost wake-up. A variable so that a test can take the
// net away.
var fetchPollInterval = time.Second

// ErrEnqueue wraps every enqueue failure.
var ErrEnqueue = errors.New("enqueue task")

// New returns a queue on pool. With workers it works the default queue once
// started; with nil it only enqueues.
func New(pool *pgxpool.Pool, workers *Workers, cfg config.Queue, log *slog.Logger) (*Queue, error) {
	rc := &river.Config{
		Logger:               zlog.Component(log, "queue"),
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		// River's default cooldown (100 ms) bounds how often an inserting
		// client wakes a queue's workers; a task inserted less than that
		// after the last wake-up sent none and waited for the poll, a
		// second: a burst of pushes, or a build handing on to its deploy
		// right after another, was picked a second late (bench/api). A
		// fetch is one indexed query, made only with a free worker slot.
		FetchCooldown:     fetchCooldown,
		FetchPollInterval: fetchPollInterval,
		// Roles enqueue tasks that other roles work (a build hands on a
		// deploy): a task kind this role has no worker for is normal.
		SkipUnknownJobCheck: true,
		// River's daily REINDEX needs the tables' owner, and no platform
		// role is (each connects as its own Postgres group's member, see
		// internal/dbrole): it would fail with permission denied every day.
		// Index bloat is autovacuum's, or a DBA's REINDEX CONCURRENTLY.
		ReindexerIndexNames: []string{},
	}
	if workers != nil {
		workers.addStandIns()
		rc.Workers = workers.w
		rc.LeaderElectionDisabled = workers.follow
		rc.Queues = map[string]river.QueueConfig{}
		for _, name := range workers.queues {
			rc.Queues[name] = river.QueueConfig{MaxWorkers: max(cfg.Workers, 1)}
		}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &Queue{client: client, working: workers != nil}, nil
}

// Start begins working tasks; it returns once the workers are running.
func (q *Queue) Start(ctx context.Context) error {
	if !q.working {
		return errors.New("queue: no workers registered; this queue only enqueues")
	}
	return q.client.Start(ctx)
}

// Stop waits for running tasks to finish, or for ctx to end.
func (q *Queue) Stop(ctx context.Context) error {
	if !q.working {
		return nil
	}
	return q.client.Stop(ctx)
}

// EnqueueTx adds task to the queue as part of tx: it becomes visible to
// workers when tx commits, and disappears if tx rolls back.
func (q *Queue) EnqueueTx(ctx context.Context, tx pgx.Tx, task Task) (int64, error) {
	res, err := q.client.InsertTx(ctx, tx, task, nil)
	if err != nil {
		return 0, fmt.Errorf("%w %s: %w", ErrEnqueue, task.Kind(), err)
	}
	return res.Job.ID, nil
}

// Enqueue adds task on its own, for work that no row depends on.
func (q *Queue) Enqueue(ctx context.Context, task Task) (int64, error) {
	res, err := q.client.Insert(ctx, task, nil)
	if err != nil {
		return 0, fmt.Errorf("%w %s: %w", ErrEnqueue, task.Kind(), err)
	}
	return res.Job.ID, nil
}

// State is a task's place in its life: available, running, retryable,
// completed, discarded, cancelled, scheduled, pending.
type State = rivertype.JobState

// Status is what the queue knows of one task.
type Status struct {
	State       State
	Attempt     int
	AttemptedAt *time.Time
	Errors      []string
}

// Status reports on the task with the given id.
func (q *Queue) Status(ctx context.Context, jobID int64) (Status, error) {
	row, err := q.client.JobGet(ctx, jobID)
	if err != nil {
		return Status{}, fmt.Errorf("queue: task %d: %w", jobID, err)
	}
	s := Status{State: row.State, Attempt: row.Attempt, AttemptedAt: row.AttemptedAt}
	for _, e := range row.Errors {
		s.Errors = append(s.Errors, e.Error)
	}
	return s, nil
}

// EnqueueFromWorkerTx adds task as part of tx from inside a running task's
// Work (ctx is the one River gave it): a task that finishes by handing on
// to the next (a build to its deploy) does so without knowing the queue.
func EnqueueFromWorkerTx(ctx context.Context, tx pgx.Tx, task Task) error {
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return fmt.Errorf("%w %s: not inside a task: %w", ErrEnqueue, task.Kind(), err)
	}
	if _, err := client.InsertTx(ctx, tx, task, nil); err != nil {
		return fmt.Errorf("%w %s: %w", ErrEnqueue, task.Kind(), err)
	}
	return nil
}
