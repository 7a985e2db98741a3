package nodeagent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/instance"
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
	for h.state(t, fresh).State != instance.StateHealthy {
		select {
		case err := <-passes:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("the new instance is still %s while the old one stops", h.state(t, fresh).State)
		}
	}
	if got := h.state(t, old); got.State != instance.StateStopping {
		t.Fatalf("old instance while its stop is under way: %s, want stopping", got.State)
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
