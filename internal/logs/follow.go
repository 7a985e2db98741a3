package logs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// Event is what Follow hands over: a line, an instance whose log cannot be
// read, or neither (a keep-alive: nothing happened for a while). Cursor is
// where a reader resumes after this event.
type Event struct {
	Line    *Line
	Missing *Missing
	Cursor  Cursor
}

// item is what a source's goroutine sends to the merging loop.
type item struct {
	line       *Line
	missing    *Missing
	build      uuid.UUID // the build a build line is of
	next       int64     // a runtime line's instance: the offset after it
	exited     uuid.UUID // an instance follower ended: its node closed the log
	buildsDone bool
	err        error // the build follower failed
}

// Follow hands fn every line after q.After as the sources produce it, and
// keepAlive-spaced empty events while there are none, until the deployment
// is finished (failed or stopped; or, for the build log alone, its build
// ended) and every line is handed over, or until ctx ends or fn fails. A
// node that does not answer yields one Missing event per outage; its
// instance is read again once it answers.
func (r *Reader) Follow(ctx context.Context, q Query, keepAlive time.Duration, fn func(Event) error) error {
	if err := q.validate(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after the cancel below: no goroutine outlives Follow
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cur := q.After.clone()
	items := make(chan item)
	send := func(ctx context.Context, it item) bool {
		select {
		case items <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	buildsDone := !q.Build
	if q.Build {
		after := cloneMap(cur.Builds)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.followBuilds(ctx, q, after, send)
			send(ctx, item{buildsDone: true, err: err})
		}()
	}
	followers := map[uuid.UUID]context.CancelFunc{} // instances being followed
	started := map[uuid.UUID]bool{}                 // instances followed once: never twice
	stopFollowers := func() {
		for _, stop := range followers {
			stop()
		}
	}
	defer stopFollowers()
	poll := time.NewTicker(r.Poll)
	defer poll.Stop()
	idle := time.NewTimer(keepAlive)
	defer idle.Stop()
	emit := func(e Event) error {
		idle.Reset(keepAlive)
		e.Cursor = cur
		return fn(e)
	}

	check := func() (finished bool, err error) {
		d, err := deployment.Store{DB: r.Pool}.Get(ctx, q.DeploymentID)
		if err != nil {
			return false, err
		}
		done := d.Status == deployment.StatusStopped || d.Status == deployment.StatusFailed
		if q.Runtime && !done {
			ins, err := r.instances(ctx, q.DeploymentID)
			if err != nil {
				return false, err
			}
			for _, in := range ins {
				if started[in.ID] {
					continue
				}
				fctx, stop := context.WithCancel(ctx)
				followers[in.ID], started[in.ID] = stop, true
				from := cur.Instances[in.ID]
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.followInstance(fctx, in, from, func(it item) bool { return send(fctx, it) })
					send(ctx, item{exited: in.ID})
				}()
			}
		}
		return buildsDone && (!q.Runtime || done), nil
	}
	finished, err := check()
	for err == nil && !finished {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle.C:
			err = emit(Event{})
		case <-poll.C:
			finished, err = check()
		case it := <-items:
			switch {
			case it.buildsDone:
				if it.err != nil {
					return it.err
				}
				buildsDone = true
				finished, err = check()
			case it.exited != uuid.Nil:
				// The instance stopped for good and its log was read to
				// the end.
				followers[it.exited]()
				delete(followers, it.exited)
			case it.line != nil && it.line.Source == SourceBuild:
				bid, _ := uuid.Parse(it.line.ID)
				cur.Builds = cloneMap(cur.Builds)
				cur.Builds[it.build] = bid
				err = emit(Event{Line: it.line})
			case it.line != nil:
				cur.Instances = cloneMap(cur.Instances)
				cur.Instances[it.line.InstanceID] = it.next
				err = emit(Event{Line: it.line})
			case it.missing != nil:
				err = emit(Event{Missing: it.missing})
			}
		}
	}
	if err != nil {
		return err
	}
	// Finished: what the instances wrote before they stopped is read once
	// more from where the followers got, then the stream ends.
	stopFollowers()
	clear(followers)
	if !q.Runtime {
		return nil
	}
	ins, err := r.instances(ctx, q.DeploymentID)
	if err != nil {
		return err
	}
	nodes := map[uuid.UUID]node.Node{}
	for _, in := range ins {
		var emitErr error
		err := r.readInstance(ctx, nodes, in, cur.Instances[in.ID], func(l Line, next int64) bool {
			cur.Instances = cloneMap(cur.Instances)
			cur.Instances[in.ID] = next
			emitErr = emit(Event{Line: &l})
			return emitErr == nil
		})
		if emitErr != nil {
			return emitErr
		}
		var m *missingError
		if errors.As(err, &m) {
			if err := emit(Event{Missing: &m.Missing}); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// followBuilds follows every build of the deployment in attempt order,
// each until it ended.
func (r *Reader) followBuilds(ctx context.Context, q Query, after map[uuid.UUID]uuid.UUID, send func(context.Context, item) bool) error {
	seen := map[uuid.UUID]bool{}
	for {
		builds, err := db.New(r.Pool).BuildListByDeployment(ctx, q.DeploymentID)
		if err != nil {
			return fmt.Errorf("builds of %s: %w", q.DeploymentID, err)
		}
		fresh := 0
		for _, b := range builds {
			if seen[b.ID] {
				continue
			}
			seen[b.ID], fresh = true, fresh+1
			ended := func(ctx context.Context) (bool, error) {
				got, err := build.NewStore(r.Pool).Get(ctx, b.ID)
				if err != nil {
					return false, err
				}
				return buildEnded(got.Status), nil
			}
			err := r.builds().Follow(ctx, b.ID, after[b.ID], ended, func(l buildlog.Line) error {
				if !q.inTime(l.At) {
					return nil
				}
				line := buildLine(l)
				if !send(ctx, item{line: &line, build: b.ID}) {
					return ctx.Err()
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if fresh == 0 {
			return nil // no attempt began while the others were followed
		}
	}
}

// followInstance follows one instance's log from offset until its node
// closes it and the instance has stopped for good, or ctx ends. It
// reconnects when the connection breaks or the node restarts, and says
// once per outage that the node is down.
func (r *Reader) followInstance(ctx context.Context, in instance.Instance, offset int64, send func(item) bool) {
	reported := false
	for ctx.Err() == nil {
		n, err := node.Store{DB: r.Pool}.Get(ctx, in.NodeID)
		if err != nil {
			r.Log.WarnContext(ctx, "node of instance", "instance_id", in.ID, "err", err)
			sleep(ctx, r.Poll)
			continue
		}
		body, start, err := r.Nodes.open(ctx, n, in.ID, offset, true)
		if errors.Is(err, errNoLogs) {
			sleep(ctx, r.Poll) // not started yet: nothing is lost by waiting
			continue
		}
		if err != nil {
			if !reported && ctx.Err() == nil {
				r.Log.WarnContext(ctx, "instance log unreadable", "instance_id", in.ID, "node_id", n.ID, "err", err)
				m := missing(in, n)
				reported = send(item{missing: &m})
			}
			sleep(ctx, r.Poll)
			continue
		}
		reported = false
		if start != offset {
			l := rotated(in.ID, start)
			if !send(item{line: &l, next: start}) {
				body.Close()
				return
			}
			offset = start
		}
		ended, err := scanLines(body, in.ID, offset, func(l Line, next int64) bool {
			offset = next
			return send(item{line: &l, next: next})
		})
		body.Close()
		if ended && err == nil && r.stoppedForGood(ctx, in.ID) {
			return
		}
		sleep(ctx, r.Poll)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stoppedForGood says whether an instance will write no more: a node
// closes a followed log when the instance is removed, but also when the
// node agent itself restarts.
func (r *Reader) stoppedForGood(ctx context.Context, id uuid.UUID) bool {
	in, err := instance.Store{DB: r.Pool}.Get(ctx, id)
	if errors.Is(err, instance.ErrNotFound) {
		return true
	}
	return err == nil && (in.State == instance.StateStopped || in.State == instance.StateFailed)
}

// builds is the hub build logs are followed through.
func (r *Reader) builds() *buildlog.Hub {
	r.hubOnce.Do(func() {
		if r.Hub == nil {
			r.Hub = &buildlog.Hub{Pool: r.Pool, Poll: r.Poll}
		}
	})
	return r.Hub
}
