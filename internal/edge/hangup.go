package edge

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The goroutine path (EDGE_DATA_PATH=fast, and HTTP/1.1 over TLS on
// either of the edge's paths) waits for a response head on the client
// connection's goroutine, which then reads nothing from the client: a
// client that hangs up would go unnoticed until the head or the upstream
// timeout, with the app working for nobody. Watching every client on
// every request would cost system calls on the hot path, so the watch
// starts only once a wait has lasted hangupAfter (the upstream read
// deadline is first set to that, and the first timeout arms the watch):
// answers that come sooner cost nothing more.
//
// One epoll set per Proxy, in Go's poller, holds the clients of the waits
// that went long, each registered for hang-ups only, once (EPOLLONESHOT).
// A hang-up tells the request's headWatch, which closes the node-proxy
// connection, as the event loops and the direct exchange do.

// defaultHangupAfter is how long a wait for a response head goes before
// the goroutine path watches the client.
const defaultHangupAfter = time.Second

type hangupWatch struct {
	epfd int
	file *os.File
	raw  syscall.RawConn

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]hangupWait
	events  [16]unix.EpollEvent // the watcher's, under mu
}

// hangupWait is one watched wait: the request's watch and generation, and
// the client's descriptor (open while the wait is registered).
type hangupWait struct {
	w    *headWatch
	gen  uint64
	fd   int
	peek bool // plain HTTP: bytes still unread mean the client still wants its answer
}

func newHangupWatch() (*hangupWatch, error) {
	epfd, file, raw, err := pollableEpoll("hangups")
	if err != nil {
		return nil, err
	}
	hw := &hangupWatch{epfd: epfd, file: file, raw: raw, waiting: map[uint64]hangupWait{}}
	go hw.raw.Read(hw.ready) // returns only if the set is closed, which it never is
	return hw, nil
}

// ready takes the hang-ups that are there; false, so that the poller
// waits for the next ones.
func (hw *hangupWatch) ready(uintptr) bool {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	for {
		n, err := rawPoll(hw.epfd, hw.events[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
		for _, ev := range hw.events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			wait, ok := hw.waiting[token]
			if !ok {
				continue // its wait ended meanwhile
			}
			delete(hw.waiting, token)
			if wait.peek && ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) == 0 && !clientLeft(wait.fd) {
				continue
			}
			wait.w.leave(wait.gen)
		}
	}
}

// arm watches client for the rest of the wait of w's request. false when
// it cannot (the connection is not a socket, or closed already).
func (hw *hangupWatch) arm(client net.Conn, w *headWatch, gen uint64) (token uint64, ok bool) {
	peek := true
	if tc, isTLS := client.(interface{ NetConn() net.Conn }); isTLS {
		// Over TLS the bytes a leaving client sends last (close_notify)
		// are no request: a hang-up is a hang-up.
		client, peek = tc.NetConn(), false
	}
	sc, isSock := client.(syscall.Conn)
	if !isSock {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var addErr error
	err = raw.Control(func(fd uintptr) {
		hw.mu.Lock()
		hw.next++
		token = hw.next
		hw.waiting[token] = hangupWait{w: w, gen: gen, fd: int(fd), peek: peek}
		hw.mu.Unlock()
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
		if e := unix.EpollCtl(hw.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev); e != nil {
			hw.mu.Lock()
			delete(hw.waiting, token)
			hw.mu.Unlock()
			addErr = e
		}
	})
	return token, err == nil && addErr == nil
}

// disarm ends the watch arm began, before the client's connection can
// close (its descriptor be reused).
func (hw *hangupWatch) disarm(client net.Conn, token uint64) {
	hw.mu.Lock()
	delete(hw.waiting, token)
	hw.mu.Unlock()
	if tc, isTLS := client.(interface{ NetConn() net.Conn }); isTLS {
		client = tc.NetConn()
	}
	if sc, ok := client.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				// After a hang-up EPOLLONESHOT left it in the set,
				// disabled: it goes here too.
				unix.EpollCtl(hw.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
			})
		}
	}
}

// hangupWatcher is the Proxy's watch, made on the first wait that goes
// long; nil if the system refused it (the waits then go unwatched).
func (p *Proxy) hangupWatcher() *hangupWatch {
	p.hangupOnce.Do(func() {
		hw, err := newHangupWatch()
		if err != nil {
			p.cfg.Log.Warn("clients that leave a long wait will not be noticed", "err", err)
			return
		}
		p.hangups = hw
	})
	return p.hangups
}

// awaitHead reads the response head within the upstream timeout. On the
// goroutine path (w.client set) a wait that lasts hangupAfter has the
// client watched for the rest of it.
func (p *Proxy) awaitHead(uc *upConn, resp *response, now time.Time, w *headWatch) error {
	timeout, after := p.cfg.UpstreamTimeout, time.Duration(p.hangupAfter.Load())
	if w == nil || w.client == nil || timeout > 0 && timeout <= after {
		uc.setDeadline(now, timeout)
		return resp.readHead(uc)
	}
	uc.setDeadline(now, after)
	err := resp.readHead(uc)
	if err == nil || !isTimeout(err) {
		return err
	}
	hw := p.hangupWatcher()
	var token uint64
	armed := false
	if hw != nil {
		w.mu.Lock()
		gen := w.gen
		w.mu.Unlock()
		token, armed = hw.arm(w.client, w, gen)
	}
	if timeout > 0 {
		uc.setDeadline(now, timeout)
	} else {
		uc.clearDeadline()
	}
	err = resp.readHead(uc)
	if armed {
		hw.disarm(w.client, token)
	}
	return err
}

// isTimeout says err is a deadline's. Apart, so that the answer's
// variable, whose address escapes, costs an allocation only on errors.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
