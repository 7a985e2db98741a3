package queue_test

import (
	"context"
	"testing"
	"time"

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
	queue.Rescuable[otherRoleTask]()
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
