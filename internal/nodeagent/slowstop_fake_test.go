package nodeagent_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// slowStopRuntime is the fake runtime whose stops take as long as the
// test says, as an app that ignores SIGTERM holds its stop for the whole
// grace period.
type slowStopRuntime struct {
	*fakeRuntime
	release chan struct{}

	mu      sync.Mutex
	stopped int // stops begun
}

func (s *slowStopRuntime) Stop(ctx context.Context, iid uuid.UUID, grace time.Duration) error {
	s.mu.Lock()
	s.stopped++
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.fakeRuntime.Stop(ctx, iid, grace)
}

func (s *slowStopRuntime) stops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// TestFakeSlowStopHoldsUpNoPass: the second deploy of an app that ignores
// SIGTERM. While the old instance's stop takes its time, passes go on, and
// the new instance assigned meanwhile is created, started and reported
// healthy; the old one is reported stopped once its stop ends, and was
// stopped once, not once per pass.
func TestFakeSlowStopHoldsUpNoPass(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	rt := &slowStopRuntime{fakeRuntime: h.rt, release: make(chan struct{})}
	h.c.Runtime = rt
	h.c.Policy.StopWait = 10 * time.Millisecond
	woken := make(chan struct{}, 1)
	h.c.Ready = func() {
		select {
		case woken <- struct{}{}:
		default:
		}
	}

	old := h.instance(t)
	h.setHealthy(old, true)
	h.pass(t)
	h.pass(t)
	if got := h.state(t, old); got.State != instance.StateHealthy {
		t.Fatalf("old instance: %s %q", got.State, got.StateReason)
	}
	if _, err := (instance.Store{DB: h.pool}).SetDesired(ctx, old.ID, instance.DesiredStopped); err != nil {
		t.Fatal(err)
	}
	fresh := h.instance(t)
	h.setHealthy(fresh, true)

	// Passes run on their own: were one to wait for the stop, the test
	// must fail, not hang.
	pctx, cancel := context.WithCancel(ctx)
	passes := make(chan error)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			_, err := h.c.Pass(pctx)
			select {
			case passes <- err:
			case <-quit:
				return
			}
		}
	})
	defer func() { cancel(); close(quit); wg.Wait() }()

	deadline := time.After(20 * time.Second)
	for h.state(t, fresh).State != instance.StateHealthy || h.state(t, old).State != instance.StateStopping {
		select {
		case err := <-passes:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("the new instance is %s and the old one %s, want healthy while the old one stops", h.state(t, fresh).State, h.state(t, old).State)
		}
	}
	// A few more passes while the stop is still under way: none begins it
	// again.
	for range 3 {
		if err := <-passes; err != nil {
			t.Fatal(err)
		}
	}
	if n := rt.stops(); n != 1 {
		t.Fatalf("%d stops begun for one instance", n)
	}

	select {
	case <-woken: // the new instance's start probe
	default:
	}
	close(rt.release)
	select {
	case <-woken: // the stop's end wakes the agent
	case <-deadline:
		t.Fatal("the stop's end did not wake the agent")
	}
	for h.state(t, old).State != instance.StateStopped {
		select {
		case err := <-passes:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("old instance after its stop: %s", h.state(t, old).State)
		}
	}
}

// staleListRuntime is the fake runtime whose creates wait for the test,
// and whose List can be held after it has read the containers, so that a
// pass works from a list older than a create that ended meanwhile.
type staleListRuntime struct {
	*fakeRuntime
	createGo chan struct{}
	listed   chan struct{} // a held List has read
	listGo   chan struct{}
	hold     atomic.Bool

	mu      sync.Mutex
	creates int
}

func (s *staleListRuntime) Create(ctx context.Context, spec runtime.Spec) error {
	s.mu.Lock()
	s.creates++
	s.mu.Unlock()
	<-s.createGo
	return s.fakeRuntime.Create(ctx, spec)
}

func (s *staleListRuntime) List(ctx context.Context) ([]runtime.Status, error) {
	out, err := s.fakeRuntime.List(ctx)
	if s.hold.Load() {
		s.listed <- struct{}{}
		<-s.listGo
	}
	return out, err
}

// TestFakeStepEndingDuringAPassIsNotRepeated: a pass that does not wait
// for its steps must not act on a list read before a step of the same
// instance ended: the create that list missed would be made again (and
// fail the instance with "already exists").
func TestFakeStepEndingDuringAPassIsNotRepeated(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	rt := &staleListRuntime{fakeRuntime: h.rt, createGo: make(chan struct{}), listed: make(chan struct{}), listGo: make(chan struct{})}
	h.c.Runtime = rt
	h.c.Policy.PassWait = 0
	in := h.instance(t)
	h.setHealthy(in, true)

	h.pass(t) // begins the create, which waits
	rt.hold.Store(true)
	second := make(chan error, 1)
	go func() { _, err := h.c.Pass(ctx); second <- err }()
	<-rt.listed           // the second pass has read: no container yet
	close(rt.createGo)    // the create ends
	for h.c.Busy(in.ID) { // and its step with it
		time.Sleep(time.Millisecond)
	}
	rt.hold.Store(false)
	close(rt.listGo)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	h.c.Policy.PassWait = time.Minute
	h.pass(t)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateHealthy {
		t.Fatalf("instance: %s %q", got.State, got.StateReason)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.creates != 1 {
		t.Fatalf("%d creates of one instance", rt.creates)
	}
}

// TestFakeHealthyReportOutlivesAnOlderList: the start probe reports an
// instance healthy while a pass is between reading the instances (still
// starting) and rebuilding what the node-proxy serves from; the pass must
// keep the newer state, or the node-proxy turns away an instance the
// operator already routes to (503s through the edge until the next pass,
// seen in CI's TestUserFlows).
func TestFakeHealthyReportOutlivesAnOlderList(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	rt := &staleListRuntime{fakeRuntime: h.rt, createGo: make(chan struct{}), listed: make(chan struct{}), listGo: make(chan struct{})}
	close(rt.createGo)
	h.c.Runtime = rt
	// A start probe that keeps trying for seconds: the test answers it when
	// the second pass has read.
	h.c.Policy.StartProbe, h.c.Policy.StartProbeMax = 5*time.Millisecond, 2*time.Second
	h.c.Ready = func() {}
	in := h.instance(t)

	h.pass(t) // created and started; the app does not answer yet
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("after the first pass: %s, want starting", got.State)
	}
	h.c.Policy.PassWait = 0
	rt.hold.Store(true)
	second := make(chan error, 1)
	go func() { _, err := h.c.Pass(ctx); second <- err }()
	<-rt.listed // the second pass read the instance as starting
	h.setHealthy(in, true)
	for deadline := time.Now().Add(30 * time.Second); h.state(t, in).State != instance.StateHealthy; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // the start probe reports it
			t.Fatal("the start probe never reported the instance healthy")
		}
	}
	for h.c.Busy(in.ID) {
		time.Sleep(time.Millisecond)
	}
	rt.hold.Store(false)
	close(rt.listGo)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if _, healthy, ok := h.c.Target(in.ID); !ok || !healthy {
		t.Fatalf("after the pass the node-proxy sees the instance as healthy=%v (known %v), want healthy", healthy, ok)
	}
}
