package edge

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A parked loop waits in Go's poller, which is asked only when a thread
// runs out of work or, failing that, by the runtime's monitor every 10 ms.
// When the thread that parks one loop finds the other ready and runs it
// (the poller's non-blocking look before a thread goes idle), no thread is
// left waiting in the poller: the loop that parks next waits, with events
// pending, until the running loop parks too — at saturation it never does
// — or the monitor looks. A trace of the edge behind nginx at saturation
// showed loops left 10–28 ms that way, and wrk's p99 was twice nginx's. So
// a running loop looks at the others every stallAfter and wakes one that
// has been parked that long with events in its set.
const stallAfter = 500 * time.Microsecond

// loopSet is every running event loop of the process: the loops of one
// listener leave those of another waiting just the same.
var loopSet struct {
	mu  sync.Mutex
	all atomic.Pointer[[]*evLoop]
}

func registerLoop(lp *evLoop) {
	loopSet.mu.Lock()
	defer loopSet.mu.Unlock()
	var next []*evLoop
	if cur := loopSet.all.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, lp)
	loopSet.all.Store(&next)
}

func unregisterLoop(lp *evLoop) {
	loopSet.mu.Lock()
	defer loopSet.mu.Unlock()
	cur := loopSet.all.Load()
	if cur == nil {
		return
	}
	var next []*evLoop
	for _, o := range *cur {
		if o != lp {
			next = append(next, o)
		}
	}
	loopSet.all.Store(&next)
}

// running is the loops running now.
func running() []*evLoop {
	if all := loopSet.all.Load(); all != nil {
		return *all
	}
	return nil
}

// kickStalled wakes those of others that have been parked for stallAfter
// with events in their sets; it looks at most once per stallAfter.
func (lp *evLoop) kickStalled(now time.Time, others []*evLoop) {
	if now.Sub(lp.stallChecked) < stallAfter {
		return
	}
	lp.stallChecked = now
	for _, o := range others {
		if o == lp {
			continue
		}
		since := o.parkedSince.Load()
		if since == 0 || now.UnixNano()-since < int64(stallAfter) || !hasEvents(o.epfd) {
			continue
		}
		// A deadline already past readies the parked goroutine at once;
		// its wait then sets its own again (wait, kicked).
		o.pollFile.SetReadDeadline(kicked) //nolint:errcheck // an ended loop's file is closed: nothing to wake
		loopWakeups.Add(1)
	}
}

// kicked is the read deadline a stalled loop is woken with.
var kicked = time.Unix(1, 0)

// loopWakeups counts the loops kickStalled woke, for every listener of the
// process (zeitwork_edge_loop_wakeups_total): how often the runtime left a
// loop waiting with work, which only a production edge can tell.
var loopWakeups atomic.Uint64

// loopParks counts the times a loop found nothing to do and parked in Go's
// poller (zeitwork_edge_loop_parks_total): each is a wake-up for the
// program that next sends it an event, what ProxyConfig.LoopSpin saves.
var loopParks atomic.Uint64

// hasEvents says, without taking any, whether an epoll set has events.
func hasEvents(epfd int) bool {
	fds := [1]unix.PollFd{{Fd: int32(epfd), Events: unix.POLLIN}}
	var ts unix.Timespec
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return e == 0 && n > 0
}
