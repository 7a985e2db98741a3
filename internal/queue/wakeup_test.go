package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Tasks enqueued one after another by one client, each a little after the
// last was picked, each wake the worker: with the poll taken away, a task
// whose wake-up the client held back would never run. With River's
// default cooldown (100 ms) the second task here is such a task.
func TestTasksInQuickSuccessionEachWakeTheWorker(t *testing.T) {
	queue.SetFetchPollInterval(t, time.Hour)
	pool := testdb.New(t)
	ws := queue.NewWorkers()
	w := &echoWorker{ran: make(chan string, 10)}
	queue.Register(ws, w)
	start(t, pool, ws) // it listens for wake-ups once Start returns
	inserter, err := queue.New(pool, nil, testConfig(), zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		// Longer than the cooldown, far shorter than River's default.
		time.Sleep(20 * time.Millisecond)
		want := fmt.Sprint(i)
		if _, err := inserter.Enqueue(context.Background(), echoTask{Value: want}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-w.ran:
			if got != want {
				t.Fatalf("ran %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("task %d never ran: nothing woke the worker", i)
		}
	}
}
