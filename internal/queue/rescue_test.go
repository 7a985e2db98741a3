package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// otherRoleTask is worked by another role, on a queue of its own.
type otherRoleTask struct{ Note string }

func (otherRoleTask) Kind() string { return "test_other_role" }
func (otherRoleTask) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: "test_other_role"}
}

// TestAnotherRolesStuckTaskIsRescuedNotDiscarded: a task of a kind this
// role does not work, whose worker died mid-run, is put back for its own
// role by this role's rescuer (it may be the cluster's leader) instead of
// discarded, and this role never runs it.
func TestAnotherRolesStuckTaskIsRescuedNotDiscarded(t *testing.T) {
	queue.Rescuable[otherRoleTask](0)
	pool := testdb.New(t)
	ctx := context.Background()
	inserter, err := queue.New(pool, nil, testConfig(), zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	jobID, err := inserter.Enqueue(ctx, otherRoleTask{Note: "build"})
	if err != nil {
		t.Fatal(err)
	}
	// Its worker took it a minute ago and died.
	if _, err := pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '1 minute', attempted_by = '{dead-builder}' WHERE id = $1`, jobID); err != nil {
		t.Fatal(err)
	}
	ws := queue.NewWorkers()
	w := &echoWorker{ran: make(chan string, 1)}
	queue.Register(ws, w)
	start(t, pool, ws)

	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := inserter.Status(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		switch st.State {
		case rivertype.JobStateDiscarded:
			t.Fatalf("the other role's task was discarded: %+v", st)
		case rivertype.JobStateRetryable, rivertype.JobStateAvailable, rivertype.JobStateScheduled:
			if st.Attempt != 1 {
				t.Fatalf("rescued task %+v: this role ran it", st)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stuck task was never rescued: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// slowRoleTask is worked by a role whose worker allows a task an hour, as
// the builder allows a build its whole timeout.
type slowRoleTask struct{ Note string }

func (slowRoleTask) Kind() string { return "test_slow_role" }
func (slowRoleTask) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: "test_slow_role", MaxAttempts: 3}
}

type slowWorker struct {
	river.WorkerDefaults[slowRoleTask]
	attempts chan int
}

func (w *slowWorker) Timeout(*queue.Job[slowRoleTask]) time.Duration { return time.Hour }

func (w *slowWorker) Work(_ context.Context, job *queue.Job[slowRoleTask]) error {
	w.attempts <- job.Attempt
	return nil
}

// TestStuckTaskIsRescuedByTheSameRuleWhicheverRoleStartedFirst: the role
// whose worker allows a task an hour starts first, as a builder restarted
// after a crash does, and follows; the other role leads, and rescues the
// dead worker's task once it has run for the kind's declared time, not the
// hour (a builder leading judged a killed builder's build stuck only after
// the whole build timeout: test/chaos's TestKillBuilderMidBuild in CI). The
// rescued task runs again on its own role, once.
func TestStuckTaskIsRescuedByTheSameRuleWhicheverRoleStartedFirst(t *testing.T) {
	queue.Rescuable[slowRoleTask](2 * time.Second)
	pool := testdb.New(t)
	ctx := context.Background()
	inserter, err := queue.New(pool, nil, testConfig(), zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	jobID, err := inserter.Enqueue(ctx, slowRoleTask{Note: "build"})
	if err != nil {
		t.Fatal(err)
	}
	// Its worker took it five seconds ago and died.
	if _, err := pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '5 seconds', attempted_by = '{dead-builder}' WHERE id = $1`, jobID); err != nil {
		t.Fatal(err)
	}

	slow := queue.NewWorkers("test_slow_role")
	w := &slowWorker{attempts: make(chan int, 4)}
	queue.Register(slow, w)
	slow.Follow()
	follower := start(t, pool, slow)
	// A client that may lead takes the empty leadership as it starts; give
	// the follower that chance before the other role starts.
	for i := 0; i < 20 && leader(t, pool) == ""; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if id := leader(t, pool); id == follower.ClientID() {
		t.Fatalf("the following client %s was elected leader", id)
	}

	other := queue.NewWorkers()
	queue.Register(other, &echoWorker{ran: make(chan string, 1)})
	lead := start(t, pool, other)

	select {
	case attempt := <-w.attempts:
		if attempt != 2 {
			t.Fatalf("the rescued task ran as attempt %d, want 2", attempt)
		}
	case <-time.After(60 * time.Second):
		st, _ := inserter.Status(ctx, jobID)
		t.Fatalf("the dead worker's task was not rescued and run again within a minute (leader %q, follower %q): %+v", leader(t, pool), follower.ClientID(), st)
	}
	if id := leader(t, pool); id != lead.ClientID() {
		t.Fatalf("leader is %q, want the leading role's client %q", id, lead.ClientID())
	}
	select {
	case attempt := <-w.attempts:
		t.Fatalf("the task ran again, as attempt %d", attempt)
	case <-time.After(time.Second):
	}
}

// leader is the client id river_leader records, or "" with none.
func leader(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var id string
	err := pool.QueryRow(context.Background(), `SELECT leader_id FROM river_leader`).Scan(&id)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return id
}
