package nodeagent_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// stallingRuntime is the fake runtime with one image whose registry never
// answers: its pulls block until their context ends.
type stallingRuntime struct {
	*fakeRuntime
	ref string

	mu      sync.Mutex
	blocked int // pulls of ref under way
}

func (s *stallingRuntime) Pull(ctx context.Context, ref string, auth *runtime.Auth) error {
	if ref != s.ref {
		return s.fakeRuntime.Pull(ctx, ref, auth)
	}
	s.mu.Lock()
	s.blocked++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.blocked--
		s.mu.Unlock()
	}()
	<-ctx.Done()
	return ctx.Err()
}

func (s *stallingRuntime) pullsBlocked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked
}

// TestFakeStalledPullHoldsUpNoOne: while one instance's pull hangs, another
// instance on the node goes all the way to healthy; the hung pull ends at
// PullTimeout and, after PullAttempts, the instance is failed with a reason.
func TestFakeStalledPullHoldsUpNoOne(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	img, dep := id.New(), id.New()
	for _, q := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'registry.test/stalled', 'v1', 'sha256:' || repeat('b', 64))`, []any{img, h.project}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k2', 3, $3)`, []any{dep, h.project, img}},
	} {
		if _, err := h.pool.Exec(ctx, q.q, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	rt := &stallingRuntime{fakeRuntime: h.rt, ref: "registry.test/stalled@sha256:" + strings.Repeat("b", 64)}
	h.c.Runtime = rt
	h.c.Policy.PullWait = 20 * time.Millisecond
	h.c.Policy.PullTimeout = time.Hour // first: stalled for as long as the test looks

	stuck, err := instance.Store{DB: h.pool}.Create(ctx, h.node, instance.New{DeploymentID: dep, Port: 8081, CPUMillis: 250, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	fine := h.instance(t)
	h.setHealthy(fine, true)

	// Passes run on their own: were a pass to wait for the stalled pull,
	// the test must fail, not hang.
	pctx, cancel := context.WithCancel(ctx)
	passes := make(chan error)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			_, err := h.c.Pass(pctx)
			select {
			case passes <- err:
			case <-stop:
				return
			}
		}
	})
	defer func() { cancel(); close(stop); wg.Wait() }()

	deadline := time.After(20 * time.Second)
	for h.state(t, fine).State != instance.StateHealthy {
		select {
		case err := <-passes:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("the healthy neighbour of a stalled pull is still %s", h.state(t, fine).State)
		}
	}
	if rt.pullsBlocked() != 1 {
		t.Fatalf("%d pulls of the stalled image under way, want the one", rt.pullsBlocked())
	}
	if got := h.state(t, stuck); got.State != instance.StatePulling {
		t.Fatalf("the stalled instance is %s %q, want pulling", got.State, got.StateReason)
	}
}

// TestFakePullTimeoutFailsTheInstance: a pull that never ends is given up
// at PullTimeout; after PullAttempts such passes the instance is failed.
func TestFakePullTimeoutFailsTheInstance(t *testing.T) {
	h := newHarness(t)
	rt := &stallingRuntime{fakeRuntime: h.rt, ref: "registry.test/app@" + h.image.Digest}
	h.c.Runtime = rt
	h.c.Policy.PullWait = time.Second
	h.c.Policy.PullTimeout = 10 * time.Millisecond
	in := h.instance(t)
	for range 10 {
		// Bounded, so that a pull nothing times out fails the test
		// instead of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := h.c.Pass(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if h.state(t, in).State == instance.StateFailed {
			break
		}
	}
	got := h.state(t, in)
	if got.State != instance.StateFailed || !strings.Contains(got.StateReason, "gave up after 10ms") {
		t.Fatalf("after pulls that never end: %s %q", got.State, got.StateReason)
	}
}

// slowRuntime is the fake runtime whose pulls take a while.
type slowRuntime struct {
	*fakeRuntime
	delay time.Duration
}

func (s *slowRuntime) Pull(ctx context.Context, ref string, auth *runtime.Auth) error {
	time.Sleep(s.delay)
	return s.fakeRuntime.Pull(ctx, ref, auth)
}

// reportedStates is a log handler that keeps, per instance, the states the
// agent reported ("instance state").
type reportedStates struct {
	mu     sync.Mutex
	states map[string][]string
}

func (l *reportedStates) Enabled(context.Context, slog.Level) bool { return true }
func (l *reportedStates) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *reportedStates) WithGroup(string) slog.Handler            { return l }

func (l *reportedStates) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "instance state" {
		return nil
	}
	var iid, state string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "instance_id":
			iid = a.Value.String()
		case "state":
			state = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.states == nil {
		l.states = map[string][]string{}
	}
	l.states[iid] = append(l.states[iid], state)
	return nil
}

func (l *reportedStates) of(in instance.Instance) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states[in.ID.String()])
}

// TestFakePullingIsReportedOnlyWhileAPullTakesTime: an image already on
// the node (its pull ends at once) goes straight to starting; a pull that
// takes a while is reported as pulling first.
func TestFakePullingIsReportedOnlyWhileAPullTakesTime(t *testing.T) {
	h := newHarness(t)
	states := &reportedStates{}
	h.c.Log = slog.New(states)
	h.c.Policy.PullWait = 10 * time.Second

	cached := h.instance(t)
	h.pass(t)
	if got := states.of(cached); !slices.Equal(got, []string{"starting"}) {
		t.Fatalf("an instance whose image is on the node reported %v, want [starting]", got)
	}

	h.c.Runtime = &slowRuntime{fakeRuntime: h.rt, delay: 300 * time.Millisecond}
	pulled := h.instance(t)
	h.pass(t)
	if got := states.of(pulled); !slices.Equal(got, []string{"pulling", "starting"}) {
		t.Fatalf("an instance whose pull took 300 ms reported %v, want [pulling starting]", got)
	}
}
