package edge

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// HTTP/2 on the event loops (EDGE_DATA_PATH=loop, over TLS 1.3).
//
// On the goroutine path an HTTP/2 connection has a goroutine that reads
// its frames and parks in Go's poller between them: a wake-up for every
// request, on top of the goroutine its stream's handler runs on. Here
// the loop that owns the connection reads and opens its records as it
// does for HTTP/1.1 (tls_records.go), takes the frames that are here
// whole, and acts on each as that goroutine would (h2.go's handle): one
// epoll_wait serves every connection with something to say.
//
// Each stream's handler still runs on a goroutine of its own (the direct
// exchange) and writes its frames itself, under the connection's lock,
// to the non-blocking socket. What the socket does not take waits in the
// connection's buffer (h2Conn.out) for the loop, which writes it when
// epoll says the socket takes more; a handler with more than a few
// chunks waiting there waits too, so a client that reads slowly holds
// back the app's response rather than the edge's memory, and one that
// reads nothing for h2WriteTimeout is dropped.
const (
	h2InBuf    = 32 << 10  // the read buffer: two of the largest frames we take
	h2InMax    = 256 << 10 // the most a header block may make us hold before it is whole
	h2OutPause = 256 << 10 // output waiting for the socket beyond which the loop stops reading
	h2Linger   = time.Second
)

var h2InPool = sync.Pool{New: func() any { b := make([]byte, 0, h2InBuf); return &b }}

// h2Stage is where a loop's HTTP/2 connection is.
type h2Stage uint8

const (
	h2WantPreface  h2Stage = iota // the client's preface, under the header timeout
	h2WantSettings                // its first frame, which must be SETTINGS
	h2Open                        // frames
	h2Lingering                   // a connection error was sent: what the client still sends is read and dropped
)

// loopH2 is an HTTP/2 connection in a loop.
type loopH2 struct {
	lp    *evLoop
	fd    int
	t     *tlsRecords
	sc    *h2Conn
	stage h2Stage
	readiness
	in       *[]byte // plaintext from the client; (*in)[r:] is not yet read as frames; nil when empty
	r        int
	dropped  int          // bytes read and dropped while lingering
	deadline int64        // UnixNano: the preface and first SETTINGS, or lingering; 0: none
	stuck    atomic.Int64 // UnixNano since when output has waited for the socket; 0: it has not
	closed   bool

	// The streams the loop serves itself (h2_native.go).
	natives []*loopClient
	waiting []*loopClient // for their windows or the socket
	spare   []*loopClient // waiting's other buffer
	aborted []*loopClient // reset, their exchanges still to end (reap)
}

// adoptH2 takes an HTTP/2 connection whose handshake crypto/tls made.
func (lp *evLoop) adoptH2(fd int, fc *fastConn, t *tlsRecords, remote string) {
	if !lp.enter(fd) {
		t.release()
		return
	}
	lp.fl.onLoop.Add(1)
	h := &loopH2{lp: lp, fd: fd, t: t}
	h.sc = newH2Conn(fc, fc.tlsState, remote)
	h.sc.lh = h
	h.sc.init(h)
	h.readable = true // the socket may hold more than the handshake
	if d := lp.fl.readHeaderTimeout; d > 0 {
		h.deadline = time.Now().Add(d).UnixNano()
	}
	lp.set(fd, h)
	h.readFrames()
}

// event handles the connection's readiness.
func (h *loopH2) event(ev uint32) {
	h.note(ev)
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		h.drain()
	}
	if h.readable && !h.closed {
		h.readFrames()
	}
}

// readFrames reads what the client sent and acts on the frames that are
// whole, until the socket has nothing more for now.
func (h *loopH2) readFrames() {
	for !h.closed {
		if h.stage == h2Lingering {
			h.drop()
			return
		}
		for h.whole() {
			ok := h.frame()
			h.reap()
			if !ok {
				h.stop()
				return
			}
			if h.closed {
				return
			}
		}
		h.resume()
		if h.backlogged() {
			return // the loop's next write to the socket reads on
		}
		n, err := h.fill()
		if n == 0 {
			if err != nil { // the client closed, or the connection failed
				h.close()
			}
			return
		}
	}
}

// Read gives the framer what is here of the current frame (whole says
// the frame, and the rest of its header block, is).
func (h *loopH2) Read(p []byte) (int, error) {
	if h.in == nil {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, (*h.in)[h.r:])
	h.r += n
	if n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}

// whole says whether the next thing to read is here whole: the preface,
// or a frame — with a header block, every CONTINUATION frame of it (the
// framer reads a block at once).
func (h *loopH2) whole() bool {
	if h.in == nil {
		return false
	}
	b := (*h.in)[h.r:]
	if h.stage == h2WantPreface {
		return len(b) >= len(h2Preface)
	}
	block := false
	for {
		if len(b) < frameHeaderLen {
			return false
		}
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if n > h2MaxFrame {
			return true // the framer refuses it by its header
		}
		if len(b) < frameHeaderLen+n {
			return false
		}
		typ, flags := http2.FrameType(b[3]), http2.Flags(b[4])
		switch {
		case block && typ != http2.FrameContinuation:
			return true // the framer refuses it
		case (typ == http2.FrameHeaders || block) && !flags.Has(http2.FlagHeadersEndHeaders):
			block = true
			b = b[frameHeaderLen+n:]
		default:
			return true
		}
	}
}

const frameHeaderLen = 9

// frame reads the next frame (or the preface) and acts on it; false ends
// the connection.
func (h *loopH2) frame() bool {
	sc := h.sc
	switch h.stage {
	case h2WantPreface:
		b := (*h.in)[h.r:]
		if string(b[:len(h2Preface)]) != h2Preface {
			return false
		}
		h.r += len(h2Preface)
		h.stage = h2WantSettings
		return sc.greet()
	case h2WantSettings:
		f, err := sc.readFrame()
		if !sc.first(f, err) {
			return false
		}
		h.stage, h.deadline = h2Open, 0
		return true
	}
	return sc.handleRead(sc.readFrame())
}

// fill reads what the socket has into the read buffer: n > 0 bytes of
// plaintext, or 0 with a nil error for nothing until the next edge.
func (h *loopH2) fill() (int, error) {
	if h.in == nil {
		h.in, h.r = h2InPool.Get().(*[]byte), 0
	}
	b := *h.in
	if h.r > 0 {
		b = b[:copy(b, b[h.r:])]
		h.r = 0
	}
	if cap(b)-len(b) < frameHeaderLen+h2MaxFrame {
		if cap(b) >= h2InMax {
			// A header block this large is not one we would take.
			h.sc.goAway(http2.ErrCodeEnhanceYourCalm)
			*h.in = b
			return 0, errH2StreamGone
		}
		b = append(make([]byte, 0, min(2*cap(b), h2InMax)), b...)
	}
	for {
		n, err := h.t.take(b[len(b):cap(b)])
		if n > 0 {
			*h.in = b[:len(b)+n]
			return n, nil
		}
		if err != nil {
			*h.in = b
			return 0, err
		}
		m, err := h.readiness.fill(h.fd, h.t.inSpace())
		h.t.filled(m)
		if m == 0 {
			if len(b) == 0 {
				h.releaseIn(b)
			} else {
				*h.in = b
			}
			return 0, err
		}
	}
}

// releaseIn gives an empty read buffer back.
func (h *loopH2) releaseIn(b []byte) {
	if cap(b) == h2InBuf {
		b = b[:0]
		*h.in = b
		h2InPool.Put(h.in)
	}
	h.in, h.r = nil, 0
}

// backlogged says the client has not read what the edge wrote: the loop
// reads nothing more from it (its PINGs and SETTINGS would be answered
// into the buffer) until the socket takes it.
func (h *loopH2) backlogged() bool {
	sc := h.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.out.b) > h2OutPause
}

// flushLocked writes the connection's frames, as records, as far as the
// socket takes them; the loop writes the rest when it takes more.
func (h *loopH2) flushLocked() error {
	sc := h.sc
	for {
		n, err := writeRecords(h.t, fdWriter(h.fd), sc.out.b)
		if n == len(sc.out.b) {
			sc.out.written()
		} else {
			sc.out.b = sc.out.b[:copy(sc.out.b, sc.out.b[n:])]
		}
		switch err {
		case nil:
			h.stuck.Store(0)
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if h.stuck.Load() == 0 {
				h.stuck.Store(time.Now().UnixNano())
			}
			return nil
		}
		sc.closed = true
		sc.cond.Broadcast()
		h.closeSoon()
		return err
	}
}

// drain writes what waited for the socket, and tells the handlers that
// wait for room.
func (h *loopH2) drain() {
	sc := h.sc
	sc.mu.Lock()
	if !sc.closed && (len(sc.out.b) > 0 || len(h.t.queued()) > 0) {
		h.flushLocked()
		sc.cond.Broadcast()
	}
	sc.mu.Unlock()
	h.resume()
}

// closeSoon has the loop close the connection (from any goroutine).
func (h *loopH2) closeSoon() {
	h.lp.do(h.close)
}

// stop ends the connection when its reader would have returned: with
// lingering after a connection error (h2Conn.close says why).
func (h *loopH2) stop() {
	sc := h.sc
	sc.mu.Lock()
	if !sc.closed {
		h.flushLocked()
	}
	sc.mu.Unlock()
	linger := sc.end()
	h.reap()
	if !linger || h.closed {
		h.close()
		return
	}
	h.t.sealClose()
	h.writeQueued()
	unix.Shutdown(h.fd, unix.SHUT_WR)
	h.stage, h.deadline = h2Lingering, time.Now().Add(h2Linger).UnixNano()
	h.drop()
}

// drop reads and drops what a lingering connection's client sends,
// until it closes, or has sent too much.
func (h *loopH2) drop() {
	for !h.closed {
		n, err := h.fill()
		if h.in != nil {
			h.releaseIn((*h.in)[:0])
		}
		h.dropped += n
		if err != nil || h.dropped > 1<<20 {
			h.close()
			return
		}
		if n == 0 {
			return
		}
	}
}

func (h *loopH2) writeQueued() {
	if q := h.t.queued(); len(q) > 0 {
		if n, _ := rawWrite(h.fd, q); n > 0 {
			h.t.wrote(n)
		}
	}
}

// close ends the connection and its streams.
func (h *loopH2) close() {
	if h.closed {
		return
	}
	h.closed = true
	lp, sc := h.lp, h.sc
	sc.mu.Lock()
	if !sc.closed && len(sc.out.b) > 0 {
		h.flushLocked() // a GOAWAY, if the socket takes it
	}
	sc.mu.Unlock()
	sc.end() // no handler writes after this
	h.reap()
	h.t.sealClose()
	h.writeQueued()
	h.t.release()
	if h.in != nil {
		h.releaseIn((*h.in)[:0])
	}
	if lp.fds[h.fd] == h {
		lp.fds[h.fd] = nil
	}
	unix.Close(h.fd)
	lp.clients.Add(-1)
	lp.fl.wg.Done()
}

// sweep ends the connection past its deadline, or whose client has read
// nothing for h2WriteTimeout.
func (h *loopH2) sweep(now int64) {
	for i := len(h.natives) - 1; i >= 0; i-- {
		if i < len(h.natives) {
			if c := h.natives[i]; c.deadline != 0 && c.deadline <= now {
				c.expire()
			}
		}
	}
	if h.deadline != 0 && h.deadline <= now {
		h.close()
		return
	}
	if s := h.stuck.Load(); s != 0 && now-s > int64(h2WriteTimeout) {
		h.close()
	}
}

// closing: the listener closes. An open connection is told to go
// (GOAWAY) and closes once its streams are answered; one yet to open has
// its header timeout.
func (h *loopH2) closing() {
	if h.stage == h2Open {
		h.sc.shutdown()
	}
}
