package testenv

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load is clients asking a server in a loop, each request on a new
// connection (so that every one must be accepted), while a test restarts
// what serves them. It counts answers and failures; a restart that
// refuses or drops anything shows up as a failure.
type Load struct {
	ok, failed atomic.Int64
	first      atomic.Value // the first failure's message
	stop       chan struct{}
	wg         sync.WaitGroup
}

// StartLoad starts clients goroutines, each calling ask with its own
// keep-alive-less client until Stop. ask returns nil for an answer.
func StartLoad(clients int, ask func(*http.Client) error) *Load {
	l := &Load{stop: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := ask(client); err != nil {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

// Answered is the number of answers so far.
func (l *Load) Answered() int64 { return l.ok.Load() }

// AnsweredAfter waits until ten more requests than n are answered, so that
// answers counted after a restart returned come from the new process; it
// ends the test after timeout.
func (l *Load) AnsweredAfter(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); l.ok.Load() < n+10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no requests answered for %s (%d failed, the first: %v)", timeout, l.failed.Load(), l.first.Load())
		}
	}
}

// Stop ends the clients and fails the test if any request failed or none
// was answered. It returns the answers, for the test's log.
func (l *Load) Stop(t testing.TB) (answered int64) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	ok, failed := l.ok.Load(), l.failed.Load()
	if failed > 0 {
		t.Errorf("%d of %d requests failed, the first: %v", failed, ok+failed, l.first.Load())
	}
	if ok == 0 {
		t.Error("no request answered")
	}
	return ok
}
