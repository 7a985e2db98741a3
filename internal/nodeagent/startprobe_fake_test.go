package nodeagent_test

import (
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
