package runtime

import (
	"testing"
	"time"
)

// The start boost raises a limited instance's CPU quota only: an instance
// without a limit, or allowed more than the boost, keeps its own, and Kata
// instances, whose quota sizes the microVM, get none.
func TestBoostAppliesToLimitedRuncInstances(t *testing.T) {
	cfg := Config{StartBoost: 10 * time.Second, StartBoostCPUMillis: 1000, RuntimeHandler: HandlerRunc}
	h := hardening{boostCPU: (&Runtime{cfg: cfg}).boostCPU()}
	for millis, want := range map[int]int{100: 1000, 999: 1000, 1000: 0, 2000: 0, 0: 0} {
		if got := h.boostMillis(Spec{CPUMillis: millis}); got != want {
			t.Errorf("CPUMillis %d starts with %d, want %d", millis, got, want)
		}
	}
	if got := h.boostLabels(Spec{CPUMillis: 100})[labelCPUMillis]; got != "100" {
		t.Errorf("a boosted instance's label keeps its own limit: %q", got)
	}
	for _, c := range []Config{
		{StartBoost: 10 * time.Second, StartBoostCPUMillis: 1000, RuntimeHandler: HandlerKata},
		{StartBoost: -1, StartBoostCPUMillis: 1000, RuntimeHandler: HandlerRunc},
	} {
		if got := (&Runtime{cfg: c}).boostCPU(); got != 0 {
			t.Errorf("%s, boost %v: boost %d, want none", c.RuntimeHandler, c.StartBoost, got)
		}
	}
}
