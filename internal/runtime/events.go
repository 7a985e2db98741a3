package runtime

import (
	"context"
	"fmt"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/google/uuid"
)

// EventKind says what happened to an instance.
type EventKind string

const (
	// EventExit: the instance's process ended (ExitCode says how).
	EventExit EventKind = "exit"
	// EventOOM: the kernel (the guest kernel, with Kata) killed a process
	// of the instance for exceeding its memory limit. An EventExit follows
	// when that was the instance's main process.
	EventOOM EventKind = "oom"
)

// Event is a change containerd reports for an instance of this owner.
type Event struct {
	InstanceID uuid.UUID
	Kind       EventKind
	ExitCode   uint32    // EventExit only
	At         time.Time // when containerd saw it
}

// Events streams exit and OOM events of this owner's instances until
// ctx ends. The channel is closed when ctx ends or the stream breaks
// (containerd restarted): the caller then lists and resubscribes. Events
// are a way to react sooner, never the only way: anything that happens
// before the subscription is in place is only seen by List and Status.
func (r *Runtime) Events(ctx context.Context) (<-chan Event, error) {
	ctx = r.ns(ctx)
	if _, err := r.client.Version(ctx); err != nil {
		return nil, fmt.Errorf("events: containerd does not answer: %w", err)
	}
	envelopes, errs := r.subscribe(ctx)
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		for {
			select {
			case env := <-envelopes:
				ev, ok := decodeEvent(env)
				if !ok || r.foreign(ctx, ev.InstanceID.String()) {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					r.log.WarnContext(ctx, "containerd event stream ended", "error", err)
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (r *Runtime) subscribe(ctx context.Context) (<-chan *events.Envelope, <-chan error) {
	ns := fmt.Sprintf("namespace==%q", r.cfg.Namespace)
	return r.client.Subscribe(ctx,
		ns+`,topic=="/tasks/exit"`,
		ns+`,topic=="/tasks/oom"`,
	)
}

func decodeEvent(env *events.Envelope) (Event, bool) {
	if env == nil || env.Event == nil {
		return Event{}, false
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		return Event{}, false
	}
	var (
		ev    = Event{At: env.Timestamp}
		cid   string
		parse error
	)
	switch e := v.(type) {
	case *apievents.TaskExit:
		// Exits of exec'd processes are not the instance ending.
		if e.ID != e.ContainerID {
			return Event{}, false
		}
		cid, ev.Kind, ev.ExitCode = e.ContainerID, EventExit, e.ExitStatus
	case *apievents.TaskOOM:
		cid, ev.Kind = e.ContainerID, EventOOM
	default:
		return Event{}, false
	}
	// Containers in our namespace that are not instances (not named by a
	// UUID) are not ours to report.
	ev.InstanceID, parse = uuid.Parse(cid)
	return ev, parse == nil
}

// watchOOM marks OOM-killed instances with a label, for as long as the
// Runtime lives, so that Status still says "OOM" after the event is gone:
// for Kata, whose metrics carry no OOM counter, this label is the only
// record. It resubscribes when the stream breaks.
func (r *Runtime) watchOOM(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		sub, cancel := context.WithCancel(ctx)
		envelopes, errs := r.client.Subscribe(sub, fmt.Sprintf(`namespace==%q,topic=="/tasks/oom"`, r.cfg.Namespace))
	stream:
		for {
			select {
			case env := <-envelopes:
				backoff = 100 * time.Millisecond
				if ev, ok := decodeEvent(env); ok && ev.Kind == EventOOM {
					r.markOOM(ctx, ev.InstanceID)
				}
			case err := <-errs:
				if ctx.Err() == nil {
					r.log.WarnContext(ctx, "OOM event stream ended; resubscribing", "error", err, "after", backoff)
				}
				break stream
			case <-ctx.Done():
				break stream
			}
		}
		cancel()
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (r *Runtime) markOOM(ctx context.Context, id uuid.UUID) {
	if r.foreign(ctx, id.String()) {
		return
	}
	ctr, err := r.load(ctx, id.String())
	if err == nil {
		_, err = ctr.SetLabels(ctx, map[string]string{labelOOM: time.Now().UTC().Format(time.RFC3339Nano)})
	}
	if err != nil && !errdefs.IsNotFound(err) {
		r.log.WarnContext(ctx, "record OOM kill", "instance_id", id, "error", err)
	}
	r.log.InfoContext(ctx, "instance OOM-killed", "instance_id", id)
}
