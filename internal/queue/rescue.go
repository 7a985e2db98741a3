package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

// River's rescuer runs on one client of the cluster, its elected leader,
// and discards a stuck task whose kind that client has no worker for. The
// roles share one River cluster but each works only its own kinds, so
// when a builder is killed mid-build and the operator leads, the build
// task was discarded rather than retried (and a killed operator's deploy
// task too, with a builder leading): the deployment stayed building or
// deploying for good. Every working client therefore knows every kind
// declared here, with a stand-in worker that only lets the rescuer decide;
// the client never fetches those tasks, since it does not work their queue.
//
// The rescuer also leaves a task alone while it has run for less than its
// worker's timeout, asked of the leader's worker for that kind. That made
// the time to rescue depend on which role led: a killed builder's build
// was retried after 20 s when an operator led (its stand-in has no timeout
// of its own) and after the build timeout, 15 minutes, when a builder led
// (its real worker's). Roles that follow (Workers.Follow) never lead, so
// the leader's answer is always the same one, and each kind declares when
// a stand-in may rescue it.
var rescuable struct {
	sync.Mutex
	add map[string]func(*river.Workers)
}

// Rescuable declares a task kind that any role's queue may have to rescue
// for another role: the binary declares every kind it knows once, before
// roles start. A task of the kind is rescued once it has run for after
// (and for the queue's RescueAfter), or for the queue's JobTimeout when
// after is 0. Rescuing a task whose worker is still alive runs it twice
// at once, so a short after is only for kinds that guard against that
// themselves (a build's lease).
func Rescuable[T Task](after time.Duration) {
	var zero T
	rescuable.Lock()
	defer rescuable.Unlock()
	if rescuable.add == nil {
		rescuable.add = map[string]func(*river.Workers){}
	}
	rescuable.add[zero.Kind()] = func(ws *river.Workers) { river.AddWorker(ws, &standIn[T]{after: after}) }
}

// addStandIns gives ws a stand-in worker for every declared kind it does
// not work itself.
func (ws *Workers) addStandIns() {
	rescuable.Lock()
	defer rescuable.Unlock()
	for kind, add := range rescuable.add {
		if !ws.kinds[kind] {
			add(ws.w)
			ws.kinds[kind] = true
		}
	}
}

// standIn is registered for kinds a role rescues but does not work. It
// runs only if a task of its kind lands on a queue the role works, which
// is a bug: it fails the attempt, so the task is retried.
type standIn[T Task] struct {
	river.WorkerDefaults[T]
	after time.Duration
}

// Timeout is what the rescuer asks before it rescues a task of this kind:
// the task is left alone while it has run for less.
func (s *standIn[T]) Timeout(*river.Job[T]) time.Duration { return s.after }

func (*standIn[T]) Work(_ context.Context, job *river.Job[T]) error {
	return fmt.Errorf("queue: task %d of kind %s is on queue %s, which this role works, but it has no worker for it", job.ID, job.Kind, job.Queue)
}
