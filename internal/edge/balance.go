package edge

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// health is what the edge has seen of one instance: requests in flight
// (for load balancing) and failures to reach it (passive health checks).
type health struct {
	inflight  atomic.Int64
	failures  atomic.Int32
	downUntil atomic.Int64 // unix nanoseconds; skip the instance until then
}

// Passive health: an instance that refuses a connection is skipped at once,
// for a cool-down that doubles with each consecutive failure. The database
// will soon say the instance is gone; until then, no request waits on it.
const (
	firstCooldown = 500 * time.Millisecond
	maxCooldown   = 30 * time.Second
)

func (h *health) down(now time.Time) {
	n := min(h.failures.Add(1), 16)
	cool := min(firstCooldown<<(n-1), maxCooldown)
	h.downUntil.Store(now.Add(cool).UnixNano())
}

func (h *health) up() {
	if h.failures.Load() != 0 {
		h.failures.Store(0)
		h.downUntil.Store(0)
	}
}

func (h *health) isUp(now int64) bool { return h.downUntil.Load() <= now }

// pick chooses a backend by the power of two choices: two candidates at
// random, the one with fewer requests in flight wins. That balances about
// as well as least-loaded without a global scan or lock, and never sends a
// burst to one instance the way pure least-loaded does across edges.
// Backends in tried are out; instances cooling down are used only when
// nothing else is left. ok is false when every backend was tried.
func pick(backends []Backend, tried []int) (int, bool) {
	now := time.Now().UnixNano()
	var live, all [8]int // small-slice fast path: most apps run 3 instances
	liveIdx, allIdx := live[:0], all[:0]
	for i := range backends {
		if contains(tried, i) {
			continue
		}
		allIdx = append(allIdx, i)
		if backends[i].health == nil || backends[i].health.isUp(now) {
			liveIdx = append(liveIdx, i)
		}
	}
	candidates := liveIdx
	if len(candidates) == 0 {
		candidates = allIdx
	}
	switch len(candidates) {
	case 0:
		return 0, false
	case 1:
		return candidates[0], true
	}
	i := rand.IntN(len(candidates))
	j := rand.IntN(len(candidates) - 1)
	if j >= i {
		j++
	}
	a, b := candidates[i], candidates[j]
	if inflight(backends[b]) < inflight(backends[a]) {
		return b, true
	}
	return a, true
}

func inflight(b Backend) int64 {
	if b.health == nil {
		return 0
	}
	return b.health.inflight.Load()
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
