package edge

import (
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
)

// stalledLoop is a loop parked in Go's poller that the poller will not
// wake when its set has events: it waits on a pipe nobody writes, as a
// loop waits when no thread is left watching the poller. efd is an
// eventfd in its set, for the test to give it an event.
func stalledLoop(t *testing.T) (lp *evLoop, efd int) {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(epfd) })
	efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(efd) })
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	raw, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	lp = &evLoop{epfd: epfd, pollFile: r, raw: raw, lfd: -1}
	lp.readyFn = lp.pollReady
	return lp, efd
}

type waited struct {
	n   int
	err error
}

// park runs lp.wait on a goroutine and returns once the loop is parked.
func park(t *testing.T, lp *evLoop) <-chan waited {
	t.Helper()
	done := make(chan waited, 1)
	go func() {
		n, err := lp.wait()
		done <- waited{n, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for lp.parkedSince.Load() == 0 {
		select {
		case w := <-done:
			t.Fatalf("wait returned %d, %v instead of parking", w.n, w.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop never parked")
		}
		time.Sleep(time.Millisecond)
	}
	return done
}

func stillParked(t *testing.T, done <-chan waited, after string) {
	t.Helper()
	select {
	case w := <-done:
		t.Fatalf("%s: the loop woke (%d, %v)", after, w.n, w.err)
	case <-time.After(50 * time.Millisecond):
	}
}

// A running loop wakes a loop that has been parked stallAfter with events
// in its set, and leaves alone one with none, one parked for less, and
// looks at most once per stallAfter. The loop it woke takes its events and
// parks again as before: the past deadline of the wake-up is not left set.
// Each wake-up is counted (zeitwork_edge_loop_wakeups_total).
func TestRunningLoopWakesAStalledLoop(t *testing.T) {
	b, efd := stalledLoop(t)
	done := park(t, b)
	at := time.Unix(0, b.parkedSince.Load())
	others := []*evLoop{b}
	wakeups := loopWakeups.Load()

	(&evLoop{}).kickStalled(at.Add(2*stallAfter), others)
	stillParked(t, done, "kicked with no events in its set")

	if _, err := unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	stillParked(t, done, "an event in a set the poller does not watch")
	a := &evLoop{}
	a.kickStalled(at.Add(stallAfter/2), others)
	stillParked(t, done, "kicked when parked for half of stallAfter")
	a.kickStalled(at.Add(stallAfter), others)
	stillParked(t, done, "kicked half of stallAfter after the last look")
	if n := loopWakeups.Load() - wakeups; n != 0 {
		t.Fatalf("%d wake-ups counted before any", n)
	}
	a.kickStalled(at.Add(3*stallAfter/2), others)
	select {
	case w := <-done:
		if w.n != 0 || w.err != nil {
			t.Fatalf("woken, wait returned %d, %v; want 0, nil", w.n, w.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a loop parked with events for 1.5 × stallAfter was not woken")
	}
	if b.parkedSince.Load() != 0 {
		t.Fatal("a woken loop still counts as parked")
	}
	if n := loopWakeups.Load() - wakeups; n != 1 {
		t.Fatalf("%d wake-ups counted; want 1", n)
	}

	if n, err := b.wait(); n != 1 || err != nil {
		t.Fatalf("after the wake-up, wait returned %d, %v; want the eventfd's event", n, err)
	}
	var buf [8]byte
	if _, err := unix.Read(efd, buf[:]); err != nil {
		t.Fatal(err)
	}
	done = park(t, b)
	stillParked(t, done, "parked again after a wake-up")
}

// The loops of a listener are among those the others look at while they
// run, and leave when they end.
func TestLoopsAreWatchedWhileTheyRun(t *testing.T) {
	s := newStage(t, DataPathLoop, 5*time.Second)
	fl := s.edge.Listener.(*FastListener)
	if len(fl.loops) == 0 {
		t.Fatal("no loops")
	}
	for _, lp := range fl.loops {
		if !slices.Contains(running(), lp) {
			t.Fatal("a running loop is not watched")
		}
	}
	s.edge.Close()
	for _, lp := range fl.loops {
		select {
		case <-lp.ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a loop did not end after its listener closed")
		}
		if slices.Contains(running(), lp) {
			t.Fatal("an ended loop is still watched")
		}
	}
}

// A loop with a spin (EDGE_LOOP_SPIN) takes an event that comes within it
// without parking: its poller here is one nobody wakes, so only a loop
// still polling can see the event. With none coming, it parks once the
// spin is over, and the park is counted (zeitwork_edge_loop_parks_total).
func TestSpinningLoopTakesAnEventWithoutParking(t *testing.T) {
	lp, efd := stalledLoop(t)
	lp.spin = time.Minute
	spun := make(chan waited, 1)
	go func() {
		n, err := lp.wait()
		spun <- waited{n, err}
	}()
	time.Sleep(20 * time.Millisecond)
	if lp.parkedSince.Load() != 0 {
		t.Fatal("the loop parked within its spin")
	}
	if _, err := unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-spun:
		if w.n != 1 || w.err != nil {
			t.Fatalf("wait returned %d, %v; want the eventfd's event", w.n, w.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a spinning loop did not take an event that came within its spin")
	}
	var buf [8]byte
	if _, err := unix.Read(efd, buf[:]); err != nil {
		t.Fatal(err)
	}

	lp.spin = 30 * time.Millisecond
	parks := loopParks.Load()
	start := time.Now()
	done := park(t, lp)
	if took := time.Since(start); took < lp.spin {
		t.Fatalf("parked %s after it began to wait, within its %s spin", took, lp.spin)
	}
	if loopParks.Load() == parks {
		t.Fatal("the park was not counted")
	}
	stillParked(t, done, "parked after its spin")
}

// The loops' process-wide counters are on /metrics: what a scrape reads is
// what the counter held then. Other tests' loops may add to them meanwhile,
// so the scrape must fall between a read before it and one after it.
func TestLoopCountersAreMetrics(t *testing.T) {
	for _, c := range []struct {
		name    string
		counter *atomic.Uint64
		add     uint64 // apart, so that a series reading the other counter shows
	}{
		{"zeitwork_edge_loop_wakeups_total", &loopWakeups, 3},
		{"zeitwork_edge_loop_parks_total", &loopParks, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			NewMetrics(reg)
			c.counter.Add(c.add)
			before := float64(c.counter.Load())
			fams, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			after := float64(c.counter.Load())
			i := slices.IndexFunc(fams, func(f *dto.MetricFamily) bool { return f.GetName() == c.name })
			if i < 0 {
				t.Fatalf("no %s series", c.name)
			}
			if got := fams[i].GetMetric()[0].GetCounter().GetValue(); got < before || got > after {
				t.Fatalf("%s = %v, want the counter's %v to %v", c.name, got, before, after)
			}
		})
	}
}
