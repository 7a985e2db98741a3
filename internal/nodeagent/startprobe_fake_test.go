package nodeagent_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/instance"
)

// A just-started instance is probed between passes and, on its first
// answer, wakes the agent (Ready), so "healthy" need not wait for the next
// pass; one that never answers wakes nobody, and the pass alone reports.
func TestFakeStartedInstanceIsProbedBeforeTheNextPass(t *testing.T) {
	h := newHarness(t)
	ready := make(chan struct{}, 8)
	h.c.Ready = func() { ready <- struct{}{} }

	in := h.instance(t)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("after one pass: %s", got.State)
	}
	// Not answering yet: the start probes run out without a wake-up.
	time.Sleep(3 * h.c.Policy.StartProbeMax)
	select {
	case <-ready:
		t.Fatal("woken for an instance that never answered")
	default:
	}

	// A second instance that answers as soon as it starts.
	fast := h.instance(t)
	h.setHealthy(fast, true)
	h.pass(t)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("an instance answering right after its start did not wake the agent")
	}
	h.pass(t) // the pass Ready asks for
	if got := h.state(t, fast); got.State != instance.StateHealthy {
		t.Fatalf("after the woken pass: %s, want healthy", got.State)
	}
}

// TestFakeFirstProbeAnswerIsReportedByItsStart: instances that answer as
// soon as they start answer their start probe's first try, which goes
// while their start step still holds them (reporting "starting"). That
// answer must not be lost to the step, nor wait for another pass: each is
// reported healthy by the step that started it, on that one answer (no
// second probe), so healthy when the pass that started them has seen its
// steps end.
func TestFakeFirstProbeAnswerIsReportedByItsStart(t *testing.T) {
	h := newHarness(t)
	// Several at once: the probes' answers and the start steps' ends
	// interleave differently from one instance to the next.
	const n = 12
	probes := map[netip.AddrPort]int{}
	var mu sync.Mutex
	probe := h.c.Probe
	h.c.Probe = func(ctx context.Context, addr netip.AddrPort, path string) error {
		mu.Lock()
		probes[addr]++
		mu.Unlock()
		return probe(ctx, addr, path)
	}
	ready := make(chan struct{}, n)
	h.c.Ready = func() { ready <- struct{}{} }
	var ins []instance.Instance
	for range n {
		in := h.instance(t)
		h.setHealthy(in, true)
		ins = append(ins, in)
	}
	h.pass(t) // the only pass: it creates and starts them, and waits for its steps
	for _, in := range ins {
		if got := h.state(t, in); got.State != instance.StateHealthy {
			t.Errorf("instance %s answered its first start probe and is %s after the pass that started it", in.ID, got.State)
		}
	}
	mu.Lock()
	for _, in := range ins {
		if got := probes[in.AddrPort()]; got != 1 {
			t.Errorf("instance %s probed %d times, want once", in.ID, got)
		}
	}
	mu.Unlock()
	for range n {
		<-ready // each answer wakes the agent
	}
}

type probeCtxKey struct{}

// TestFakeStartProbeAnswerWaitsForTheStepUnderWay: an instance answers its
// start probe while a step of it is under way (a pass's health check,
// whose own probe came just before the app answered). The answer must be
// reported once that step ends, with no pass after it, not dropped
// because the step held the instance.
func TestFakeStartProbeAnswerWaitsForTheStepUnderWay(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	// Far from any deadline: the start probe goes on trying for seconds,
	// and the held health check does not find the instance late.
	h.c.Policy.StartProbe, h.c.Policy.StartProbeMax = 5*time.Millisecond, 2*time.Second
	h.c.Policy.HealthDeadline = time.Minute
	held, release := make(chan struct{}), make(chan struct{})
	answered := make(chan struct{}, 1)
	probe := h.c.Probe
	h.c.Probe = func(ctx context.Context, addr netip.AddrPort, path string) error {
		if ctx.Value(probeCtxKey{}) == "hold" {
			// The second pass's health check: not yet, after a while.
			held <- struct{}{}
			<-release
			return errors.New("connection refused")
		}
		err := probe(ctx, addr, path)
		if err == nil {
			select {
			case answered <- struct{}{}:
			default:
			}
		}
		return err
	}
	h.c.Ready = func() {}
	in := h.instance(t)
	h.pass(t) // started; the first try finds nothing listening
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("after the first pass: %s, want starting", got.State)
	}

	second := make(chan error, 1)
	go func() {
		_, err := h.c.Pass(context.WithValue(ctx, probeCtxKey{}, "hold"))
		second <- err
	}()
	<-held // the second pass's check holds the instance
	h.setHealthy(in, true)
	<-answered // the start probe's answer, while the check holds it
	// Time for the answer to try to claim the instance while the check
	// still holds it (what used to drop it); the outcome must not depend on it.
	time.Sleep(20 * time.Millisecond)
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("reported %s while the health check held the instance", got.State)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); h.state(t, in).State != instance.StateHealthy; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the start probe's answer was not reported: %s with no pass since", h.state(t, in).State)
		}
	}
}
