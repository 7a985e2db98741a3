package edge

import (
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/nodeproxy"
)

// The fast path on event loops of its own (EDGE_DATA_PATH=loop).
//
// The goroutine-per-connection fast path pays Go's netpoller on every
// request: a read that finds nothing parks the goroutine (a syscall that
// returns EAGAIN, a park, a wake-up through the runtime's epoll, often a
// futex), twice per request — once for the client's next request, once
// for the node-proxy's answer. nginx pays neither: it reads only what
// epoll said is there. Here each loop owns an epoll set with its clients
// and its node-proxy connections, registered edge-triggered once, and a
// request costs four syscalls (read the client, write the node-proxy, read
// its answer, write the client) plus its share of an epoll_wait.
//
// The loop runs exactly the fast path's exchange (serveFast): the same
// instance choice, retries only when no app saw the request, passive
// health, headers, error pages and metrics. A request the fast path does
// not take (see fast.go), or one whose body is still arriving, leaves the
// loop with its connection: it becomes a fastConn on a goroutine, which
// hands it on to the stdlib path where it would. Responses stream through
// the loop, a slow client holding back reads from the node-proxy.

// loopPhase is where a loop client is in its exchange.
type loopPhase uint8

const (
	phaseRead    loopPhase = iota // waiting for (the rest of) a request head
	phaseBody                     // waiting for the rest of a small request body
	phaseConnect                  // a node-proxy connection is being opened
	phaseSend                     // the request is being written to the node-proxy
	phaseAwait                    // waiting for the response head
	phaseWrite                    // the response is being written to the client
)

// evLoop is one event loop: an epoll set and the connections in it. Only
// its own goroutine touches its connections; other goroutines talk to it
// through do.
type evLoop struct {
	fl       *FastListener
	epfd     int
	pollFile *os.File        // epfd in Go's poller
	raw      syscall.RawConn // pollFile's
	due      time.Time       // pollFile's read deadline
	readyFn  func(uintptr) bool
	polled   int // pollReady's results
	pollErr  error
	efd      int // eventfd: do wakes the loop with it
	lfd      int // the listener's fd; -1 when not accepting
	fds      []loopHandler
	born     []uint64 // the batch of events during which fds[i] was set
	batch    uint64
	idle     map[string][]*loopUp // node-proxy connections at rest, by address; emptied slices stay until the sweep, for reuse
	nidle    int                  // connections in idle
	tick     time.Duration
	spin     time.Duration // ProxyConfig.LoopSpin
	swept    time.Time

	clients     atomic.Int32 // client connections the loop owns, and those on their way to it (pickLoop)
	acceptPause time.Time    // out of file descriptors: accept again after this
	stopped     bool         // no longer accepting, for good

	mu    sync.Mutex
	cmds  []func()
	dead  bool          // the loop's descriptors are closed: do does nothing
	ended chan struct{} // closed when the loop has ended

	parkedSince  atomic.Int64 // unix nanoseconds since the loop parked in Go's poller; 0 while it runs
	stallChecked time.Time    // when kickStalled last looked

	events [128]unix.EpollEvent
}

type loopHandler interface {
	event(ev uint32)
}

// readiness is what edge-triggered epoll has said of a socket's reading
// side and what reading it since has used up.
type readiness struct {
	readable bool // an EPOLLIN edge not yet read to EAGAIN
	hup      bool // the peer closed its side: reads end at EOF, and no edge will say so again
}

// note takes in an event.
func (r *readiness) note(ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		r.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		r.hup = true
	}
}

// read takes in a read that returned n of the want bytes asked for: a
// short one read to the end, and the next edge says when there is more —
// unless the peer's FIN came, which no edge announces again: the next
// read returns its EOF.
func (r *readiness) read(n, want int) {
	if n < want && !r.hup {
		r.readable = false
	}
}

// fill reads fd into p (never empty) as far as the edges allow: n > 0 is
// what it read; 0 with a nil error means nothing until the next edge;
// io.EOF means the peer closed; any other error is the connection's.
func (r *readiness) fill(fd int, p []byte) (int, error) {
	for r.readable {
		n, err := rawRead(fd, p)
		switch {
		case n > 0:
			r.read(n, len(p))
			return n, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			r.readable = false
		case err == nil:
			return 0, io.EOF
		default:
			return 0, os.NewSyscallError("read", err)
		}
	}
	return 0, nil
}

// loopClient is a client connection in a loop.
type loopClient struct {
	lp    *evLoop
	fd    int
	fc    *fastConn
	tls   *tlsRecords // nil: plain HTTP
	phase loopPhase
	readiness
	deadline int64 // UnixNano; 0: none
	partial  bool  // a request head is arriving: the header timeout runs

	// the exchange
	start      time.Time
	rid        []byte
	prefix     int
	replayable bool
	tried      [maxAttempts]int
	ntried     int
	h          *health
	up         *loopUp
	sent       int // bytes of fc.x.out the node-proxy has
	failure    error
	status     int
	took       time.Duration

	// the response body
	kind       bodyKind
	left       int64 // bodyLength: bytes still to come
	chunks     chunkScanner
	pending    []byte // still to be written to the client
	bodyDone   bool
	upstreamOK bool // the node-proxy connection ended cleanly

	// An HTTP/2 stream's exchange (h2_native.go): no socket of its own,
	// its response goes out as the stream's frames.
	st      *h2Stream
	lh      *loopH2
	waiting bool // in lh.waiting: for the stream's window, or the socket
}

// loopUp is a node-proxy connection in a loop.
type loopUp struct {
	lp         *evLoop
	fd         int
	addr       string
	buf        []byte
	r, w       int
	nread      int
	client     *loopClient // nil while idle
	reused     bool
	connecting bool
	readiness
	idleSince time.Time
}

const (
	clientEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	acceptBatch  = 64
)

// LoopListener is FastListener on event loops (one per GOMAXPROCS). It
// falls back to goroutines when l has no file descriptor to poll, or when
// the proxy dials node-proxies its own way.
func (p *Proxy) LoopListener(l net.Listener, readHeaderTimeout, idleTimeout time.Duration) *FastListener {
	sc, ok := l.(syscall.Conn)
	if !ok || p.ownDial {
		return p.FastListener(l, readHeaderTimeout, idleTimeout)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return p.FastListener(l, readHeaderTimeout, idleTimeout)
	}
	lfd := -1
	raw.Control(func(fd uintptr) { lfd = int(fd) })
	fl := newFastListener(p, l, readHeaderTimeout, idleTimeout)
	if err := fl.startLoops(lfd); err != nil {
		p.cfg.Log.Warn("event loops unavailable, serving the fast path on goroutines", "err", err)
		return p.FastListener(l, readHeaderTimeout, idleTimeout)
	}
	close(fl.accepting) // no accept loop: the event loops accept
	return fl
}

// startLoops starts the listener's event loops, accepting on lfd (-1:
// they take connections through adopt).
func (fl *FastListener) startLoops(lfd int) error {
	fl.loopLfd = lfd
	tick := loopTick(fl.readHeaderTimeout, fl.idleTimeout, fl.p.cfg.UpstreamTimeout)
	var loops []*evLoop
	for range runtime.GOMAXPROCS(0) {
		lp, err := newEvLoop(fl, lfd, tick)
		if err != nil {
			for _, lp := range loops {
				lp.closeFDs()
			}
			return err
		}
		loops = append(loops, lp)
	}
	fl.loops = loops
	for _, lp := range loops {
		registerLoop(lp)
		go lp.run()
	}
	return nil
}

// loopTick is how often a loop looks for connections past their deadline:
// a tenth of the shortest timeout, within 5 ms and 250 ms.
func loopTick(ds ...time.Duration) time.Duration {
	tick := 250 * time.Millisecond
	for _, d := range ds {
		if d > 0 {
			tick = min(tick, d/10)
		}
	}
	return max(tick, 5*time.Millisecond)
}

func newEvLoop(fl *FastListener, lfd int, tick time.Duration) (*evLoop, error) {
	epfd, pollFile, raw, err := pollableEpoll("epoll")
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		pollFile.Close()
		return nil, os.NewSyscallError("eventfd", err)
	}
	lp := &evLoop{fl: fl, epfd: epfd, pollFile: pollFile, raw: raw, efd: efd, lfd: -1, idle: map[string][]*loopUp{}, tick: tick, spin: fl.p.cfg.LoopSpin, swept: time.Now(), ended: make(chan struct{})}
	lp.readyFn = lp.pollReady
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		lp.closeFDs()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	if lfd < 0 {
		return lp, nil
	}
	if err := lp.listen(lfd); err != nil {
		lp.closeFDs()
		return nil, err
	}
	return lp, nil
}

// listen adds the listener to the set. EPOLLEXCLUSIVE wakes one loop per
// new connection, not all of them.
func (lp *evLoop) listen(lfd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(lfd)}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	lp.lfd = lfd
	return nil
}

func (lp *evLoop) unlisten() {
	if lp.lfd >= 0 {
		unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, lp.lfd, nil)
		lp.lfd = -1
	}
}

func (lp *evLoop) closeFDs() {
	unix.Close(lp.efd)
	lp.pollFile.Close()
}

// do runs f on the loop's goroutine, unless the loop has ended (false);
// a loop that ends with f queued runs it as it ends, with lp.dead set.
func (lp *evLoop) do(f func()) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.dead {
		return false
	}
	lp.cmds = append(lp.cmds, f)
	one := [8]byte{1}
	unix.Write(lp.efd, one[:])
	return true
}

// doWait runs f on the loop's goroutine and waits for it, unless the loop
// ends first.
func (lp *evLoop) doWait(f func()) {
	ran := make(chan struct{})
	lp.do(func() { f(); close(ran) })
	select {
	case <-ran:
	case <-lp.ended:
	}
}

func (lp *evLoop) run() {
	defer lp.end()
	for {
		n, err := lp.wait()
		if err != nil {
			lp.fl.p.cfg.Log.Error("event loop", "err", err)
			return
		}
		// A descriptor opened while this batch is handled may reuse the
		// number of one closed in it: the batch's events are not its own.
		lp.batch++
		for i := range n {
			ev := &lp.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == lp.efd:
				lp.commands()
			case fd == lp.lfd && fd >= 0:
				lp.accept()
			case fd < len(lp.fds) && lp.fds[fd] != nil && lp.born[fd] != lp.batch:
				lp.fds[fd].event(ev.Events)
			}
		}
		now := time.Now()
		if now.Sub(lp.swept) >= lp.tick {
			lp.sweep(now)
		}
		lp.kickStalled(now, running())
		if lp.stopped && lp.clients.Load() == 0 {
			return
		}
	}
}

// wait returns the set's next events. It never blocks in epoll_wait: a
// thread blocked in a system call has the runtime take its P away and
// wake others to look for work (measured: twice the context switches
// per request of the goroutine path, a spinning thread at 20 % of a
// core). With nothing ready, the loop's goroutine parks in Go's own
// poller, where the epoll set is registered like a socket, until the set
// has events, the sweep is due, or a running loop finds it stalled
// (kickStalled). With ProxyConfig.LoopSpin it first polls again for that
// long: a loop that parks is woken by the program that sends it the next
// event, and on a machine that sleeps its idle CPUs that wake-up costs
// the sender more than the spin costs a core with nothing else to do.
func (lp *evLoop) wait() (int, error) {
	n, err := lp.poll()
	if n > 0 || err != nil {
		return n, err
	}
	if lp.spin > 0 {
		for until := time.Now().Add(lp.spin); time.Now().Before(until); {
			// A thread of another program runnable on this core goes
			// first; with none, the yield returns at once.
			rawYield()
			if n, err := lp.poll(); n > 0 || err != nil {
				return n, err
			}
		}
	}
	var due time.Time
	if lp.clients.Load() > 0 || !lp.acceptPause.IsZero() || lp.busyIdle() {
		due = lp.swept.Add(lp.tick)
	}
	if !due.Equal(lp.due) {
		lp.due = due
		lp.pollFile.SetReadDeadline(due)
	}
	lp.polled, lp.pollErr = 0, nil
	loopParks.Add(1)
	lp.parkedSince.Store(time.Now().UnixNano())
	err = lp.raw.Read(lp.readyFn)
	lp.parkedSince.Store(0)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		lp.due = kicked // the sweep's deadline or another loop's kick: set it anew
		return 0, nil
	}
	if err == nil {
		err = lp.pollErr
	}
	return lp.polled, err
}

// pollReady is lp.raw.Read's callback, made once (readyFn): a closure
// per wait would be an allocation per wait.
func (lp *evLoop) pollReady(uintptr) bool {
	lp.polled, lp.pollErr = lp.poll()
	return lp.polled > 0 || lp.pollErr != nil
}

// poll takes the events that are ready, without waiting.
func (lp *evLoop) poll() (int, error) {
	for {
		n, err := rawPoll(lp.epfd, lp.events[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, os.NewSyscallError("epoll_wait", err)
		}
		return n, nil
	}
}

// busyIdle says the loop holds node-proxy connections at rest, which the
// sweep ages out.
func (lp *evLoop) busyIdle() bool { return lp.nidle > 0 }

func (lp *evLoop) end() {
	unregisterLoop(lp)
	lp.closeAll()
	for _, ups := range lp.idle {
		for _, u := range ups {
			lp.closeUp(u)
		}
	}
	lp.idle, lp.nidle = nil, 0
	lp.mu.Lock()
	lp.dead = true
	cmds := lp.cmds
	lp.cmds = nil
	lp.mu.Unlock()
	for _, f := range cmds {
		f() // an adopt lets its connection go
	}
	lp.closeFDs()
	close(lp.ended)
}

func (lp *evLoop) commands() {
	var b [8]byte
	unix.Read(lp.efd, b[:])
	lp.mu.Lock()
	cmds := lp.cmds
	lp.cmds = nil
	lp.mu.Unlock()
	for _, f := range cmds {
		f()
	}
}

func (lp *evLoop) set(fd int, h loopHandler) {
	for fd >= len(lp.fds) {
		n := max(64, len(lp.fds))
		lp.fds = append(lp.fds, make([]loopHandler, n)...)
		lp.born = append(lp.born, make([]uint64, n)...)
	}
	lp.fds[fd] = h
	lp.born[fd] = lp.batch
}

// accept takes the listener's new connections.
func (lp *evLoop) accept() {
	for range acceptBatch {
		nfd, sa, err := unix.Accept4(lp.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			switch err {
			case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
				return
			case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
				// Out of descriptors: leave the listener out of the set
				// for a while rather than spin on it.
				lp.unlisten()
				lp.acceptPause = time.Now().Add(100 * time.Millisecond)
				return
			}
			lp.fl.p.cfg.Log.Error("accept", "err", os.NewSyscallError("accept4", err))
			lp.unlisten()
			lp.stopped = true
			go lp.fl.Close()
			return
		}
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		fc := &fastConn{fl: lp.fl, buf: make([]byte, clientBuf), accepted: time.Now()}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			fc.setPeer(netip.AddrFrom4(a.Addr))
		case *unix.SockaddrInet6:
			fc.setPeer(netip.AddrFrom16(a.Addr))
		default:
			fc.peerText = []byte("unknown")
		}
		lp.fl.wg.Add(1)
		to := lp.fl.pickLoop(lp)
		if to == lp {
			lp.take(nfd, fc)
		} else if !to.do(func() { to.take(nfd, fc) }) {
			to.left(nfd) // the loop has ended: the listener is closed
		}
	}
}

// pickLoop chooses the loop a new connection goes to and counts it there:
// the one with the fewest. A loop that accepted it (from) keeps it unless
// another has two fewer, since handing it over costs the other loop a
// wake-up. Without this, whichever loop epoll wakes for a burst of new
// connections takes them all (seen: 64 of wrk's 64) and one core serves
// them while the other idles.
func (fl *FastListener) pickLoop(from *evLoop) *evLoop {
	to, least := from, int32(math.MaxInt32)
	if from != nil {
		least = from.clients.Load() - 1
	}
	for _, lp := range fl.loops {
		if n := lp.clients.Load(); n < least {
			to, least = lp, n
		}
	}
	to.clients.Add(1)
	return to
}

// enter adds a connection picked for this loop (pickLoop) to its epoll
// set; false: the loop has ended or epoll refused, and the connection is
// closed.
func (lp *evLoop) enter(fd int) bool {
	if !lp.dead {
		err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: clientEvents, Fd: int32(fd)})
		if err == nil {
			return true
		}
	}
	lp.left(fd)
	return false
}

// left closes a connection picked for this loop that it did not take.
func (lp *evLoop) left(fd int) {
	unix.Close(fd)
	lp.clients.Add(-1)
	lp.fl.wg.Done()
}

// take starts serving a plain connection accepted for this loop.
func (lp *evLoop) take(fd int, fc *fastConn) {
	if !lp.enter(fd) {
		return
	}
	c := &loopClient{lp: lp, fd: fd, fc: fc}
	lp.set(fd, c)
	c.waitRequest(time.Now())
}

// sweep ends what is past its deadline and ages idle node-proxy
// connections out.
func (lp *evLoop) sweep(now time.Time) {
	lp.swept = now
	if !lp.acceptPause.IsZero() && now.After(lp.acceptPause) && !lp.stopped {
		lp.acceptPause = time.Time{}
		lp.listen(lp.fl.loopLfd)
	}
	t := now.UnixNano()
	for _, h := range lp.fds {
		if h2, ok := h.(*loopH2); ok {
			h2.sweep(t)
			continue
		}
		c, ok := h.(*loopClient)
		if !ok || c.deadline == 0 || c.deadline > t {
			continue
		}
		c.expire()
	}
	for addr, ups := range lp.idle {
		kept := ups[:0]
		for _, u := range ups {
			if now.Sub(u.idleSince) > idleUpstream {
				lp.closeUp(u)
				lp.nidle--
			} else {
				kept = append(kept, u)
			}
		}
		if len(kept) == 0 {
			delete(lp.idle, addr)
		} else {
			lp.idle[addr] = kept
		}
	}
}

// expire ends what the client's deadline bounded.
func (c *loopClient) expire() {
	c.deadline = 0
	switch c.phase {
	case phaseRead, phaseBody:
		c.close()
	case phaseConnect, phaseSend, phaseAwait:
		c.upFailed(os.ErrDeadlineExceeded)
	}
}

// closing stops accepting; idle clients that were answered close now,
// those yet to send a first request get until firstRequestWait.
func (lp *evLoop) closing() {
	lp.unlisten()
	lp.stopped = true
	lp.acceptPause = time.Time{}
	for _, h := range lp.fds {
		if h2, ok := h.(*loopH2); ok {
			h2.closing()
			continue
		}
		if c, ok := h.(*loopClient); ok && c.phase == phaseRead && c.fc.w == 0 {
			if c.fc.served.Load() {
				c.close()
			} else {
				c.deadline = c.fc.accepted.Add(firstRequestWait).UnixNano()
			}
		}
	}
}

// closeAll ends every connection of the loop at once.
func (lp *evLoop) closeAll() {
	for _, h := range lp.fds {
		switch c := h.(type) {
		case *loopClient:
			c.close()
		case *loopH2:
			c.close()
		}
	}
}

// event handles the client's readiness.
func (c *loopClient) event(ev uint32) {
	c.note(ev)
	switch c.phase {
	case phaseRead:
		if c.readable {
			c.readRequest()
		}
	case phaseBody:
		if c.readable {
			c.readBody()
		}
	case phaseWrite:
		if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.writing() {
			c.pump()
		}
	case phaseConnect, phaseSend, phaseAwait:
		if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.gone() {
			c.abandon()
		}
	}
}

// clientLeft says whether the client closed its connection (or it broke)
// with nothing unread in it. Bytes still to read (a pipelined request
// before a half-close) mean it still wants an answer, as nginx sees it.
func clientLeft(fd int) bool {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			return true // reset
		}
		return n == 0
	}
}

// gone is clientLeft through the record layer: a TLS client that leaves
// sends close_notify before its FIN, so what it sent is read and opened
// (and kept, should it be a pipelined request).
func (c *loopClient) gone() bool {
	t := c.tls
	if t == nil {
		return clientLeft(c.fd)
	}
	for {
		if len(t.plain) > 0 {
			return false
		}
		if t.err != nil {
			return true
		}
		ok, err := t.open()
		if err != nil {
			t.err = err
			return true
		}
		if ok {
			continue
		}
		n, err := c.fill(c.fd, t.inSpace())
		t.filled(n)
		if n == 0 {
			return err != nil
		}
	}
}

// abandon ends an exchange whose client left while the app had its
// request: the node-proxy connection closes, so the app hears of it
// (its request's context ends) rather than work for nobody until the
// upstream timeout; nothing is retried. Counted as nginx's 499.
func (c *loopClient) abandon() {
	c.lp.fl.p.cfg.Metrics.requestFast(c.fc.x.route.ProjectID, statusClientClosed, time.Since(c.start))
	c.close()
}

// waitRequest starts waiting for the connection's next request, which
// may already be in the buffer.
func (c *loopClient) waitRequest(now time.Time) {
	fc := c.fc
	c.phase, c.partial, c.deadline = phaseRead, false, 0
	if fc.r == fc.w {
		fc.r, fc.w = 0, 0
	} else if fc.r > 0 {
		fc.w = copy(fc.buf, fc.buf[fc.r:fc.w])
		fc.r = 0
	}
	if fc.w == 0 {
		fc.release()
		switch {
		case c.lp.stopped && fc.served.Load():
			c.close()
			return
		case c.lp.stopped:
			c.deadline = fc.accepted.Add(firstRequestWait).UnixNano()
		case fc.fl.idleTimeout > 0:
			c.deadline = now.Add(fc.fl.idleTimeout).UnixNano()
		}
		if !c.readable && (c.tls == nil || !c.tls.buffered()) {
			return
		}
	}
	c.readRequest()
}

// readRequest reads and parses the request head (fastConn.readRequest
// without blocking).
func (c *loopClient) readRequest() {
	fc := c.fc
	for {
		if fc.w > 0 {
			fc.acquire()
			switch fc.x.req.parse(fc.buf[:fc.w]) {
			case parseOK:
				route, ok := fc.fl.p.cfg.Routes.Load().lookupBytes(fc.x.req.host)
				if !ok || len(route.Backends) == 0 {
					c.handOff()
					return
				}
				q := &fc.x.req
				fc.x.route = route
				end := q.headEnd + int(q.contentLength)
				if end > fc.w {
					c.startBody()
					return
				}
				q.body = fc.buf[q.headEnd:end]
				fc.r = end
				c.begin()
				return
			case parseFallback:
				c.handOff()
				return
			}
			if fc.w == len(fc.buf) {
				c.handOff()
				return
			}
			if !c.partial {
				c.partial = true
				c.deadline = 0
				if fc.fl.readHeaderTimeout > 0 {
					c.deadline = time.Now().Add(fc.fl.readHeaderTimeout).UnixNano()
				}
			}
		}
		n, err := c.read(fc.buf[fc.w:])
		if n == 0 {
			if err != nil { // the client closed, or the connection failed
				c.close()
				return
			}
			if !c.partial && c.tls != nil && c.tls.buffered() {
				// Part of a record: a request is arriving, under the
				// header timeout, not the idle one.
				c.partial = true
				c.deadline = 0
				if fc.fl.readHeaderTimeout > 0 {
					c.deadline = time.Now().Add(fc.fl.readHeaderTimeout).UnixNano()
				}
			}
			return
		}
		fc.w += n
	}
}

// startBody waits for the rest of the request's body (Content-Length, at
// most smallBody, parsed as small enough), as fastConn.readBody does: into
// the body buffer, since the head's slices point into buf, under the
// header timeout.
func (c *loopClient) startBody() {
	fc := c.fc
	q := &fc.x.req
	if cap(fc.x.body) < int(q.contentLength) {
		fc.x.body = make([]byte, 0, smallBody)
	}
	fc.x.body = append(fc.x.body[:0], fc.buf[q.headEnd:fc.w]...)
	fc.r, fc.w = 0, 0
	c.phase = phaseBody
	if !c.partial && fc.fl.readHeaderTimeout > 0 {
		c.deadline = time.Now().Add(fc.fl.readHeaderTimeout).UnixNano()
	}
	c.readBody()
}

// readBody reads what is ready of the body; once it is whole, the
// exchange begins.
func (c *loopClient) readBody() {
	fc := c.fc
	q := &fc.x.req
	b := fc.x.body
	for len(b) < int(q.contentLength) {
		n, err := c.read(b[len(b):q.contentLength])
		if n == 0 {
			if err != nil { // the client closed, or the connection failed
				c.close()
				return
			}
			fc.x.body = b
			return
		}
		b = b[:len(b)+n]
	}
	fc.x.body, q.body = b, b
	c.begin()
}

// handOff gives the connection, with what it has read, to a goroutine on
// the fast path, which forwards the request or hands it to the stdlib
// path. Nothing of the request has gone to a node-proxy.
func (c *loopClient) handOff() {
	lp, fc := c.lp, c.fc
	lp.fl.offLoop.Add(1)
	lp.fds[c.fd] = nil
	lp.clients.Add(-1)
	fc.r = 0
	unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	f := os.NewFile(uintptr(c.fd), "")
	conn, err := net.FileConn(f) // a dup, in Go's poller
	f.Close()
	if err != nil {
		fc.release()
		lp.fl.wg.Done()
		return
	}
	fc.c = conn
	if c.tls != nil {
		fc.c, c.tls = &tlsConn{Conn: conn, t: c.tls}, nil
	}
	fl := lp.fl
	fl.mu.Lock()
	fl.conns[fc] = struct{}{}
	fl.wg.Add(1)
	fl.mu.Unlock()
	fl.wg.Done()
	go fc.serve()
}

// close ends the client connection and what it was waiting on.
func (c *loopClient) close() {
	if c.st != nil {
		c.lh.nativeEnd(c, false)
		return
	}
	lp := c.lp
	if lp.fds[c.fd] != c {
		return
	}
	lp.fds[c.fd] = nil
	if t := c.tls; t != nil {
		t.sealClose() // close_notify, or the alert for what the client did
		if q := t.queued(); len(q) > 0 {
			rawWrite(c.fd, q) // as much as the socket takes now
		}
		t.release()
		c.tls = nil
	}
	unix.Close(c.fd)
	if c.up != nil {
		lp.closeUp(c.up)
		c.up = nil
	}
	if c.h != nil {
		c.h.inflight.Add(-1)
		c.h = nil
	}
	c.fc.release()
	c.phase, c.deadline = phaseRead, 0
	lp.clients.Add(-1)
	lp.fl.wg.Done()
}

// begin starts the exchange of a request read whole (serveFast).
func (c *loopClient) begin() {
	fc := c.fc
	q := &fc.x.req
	c.start = time.Now()
	c.rid = q.rid
	if !validRequestID(c.rid) {
		c.rid = fc.newRequestID(c.start)
	}
	c.prefix = fc.upstreamHead(c.rid)
	c.replayable = q.contentLength == 0 && isReplayableMethod(q.method)
	c.ntried = 0
	c.failure = errNoInstance
	c.attempt()
}

// attempt sends the request to the next instance, or answers with the
// error page when none is left.
func (c *loopClient) attempt() {
	fc := c.fc
	route := &fc.x.route
	if c.ntried < maxAttempts {
		if i, ok := pick(route.Backends, c.tried[:c.ntried]); ok {
			c.tried[c.ntried] = i
			c.ntried++
			b := &route.Backends[i]
			h := b.health
			if h == nil {
				h = &health{}
			}
			fc.x.out = fc.x.out[:c.prefix]
			fc.x.out = append(fc.x.out, "X-Zeitwork-Instance: "...)
			fc.x.out = appendUUID(fc.x.out, b.InstanceID)
			fc.x.out = append(fc.x.out, "\r\n\r\n"...)
			fc.x.out = append(fc.x.out, fc.x.req.body...)
			h.inflight.Add(1)
			c.h = h
			c.connect(b.NodeProxy, false)
			return
		}
	}
	c.fail()
}

// connect sends the request on an idle connection to addr, or on a new
// one (fresh: always a new one).
func (c *loopClient) connect(addr string, fresh bool) {
	lp := c.lp
	c.upstreamDeadline()
	var u *loopUp
	if !fresh {
		u = lp.takeIdle(addr, !c.replayable)
	}
	if u == nil {
		var err error
		if u, err = lp.dial(addr); errors.Is(err, errNotIP) && c.st == nil {
			// A name to resolve: the goroutine path dials it.
			c.h.inflight.Add(-1)
			c.h = nil
			c.handOff()
			return
		} else if err != nil {
			c.upFailed(err)
			return
		}
	}
	u.client, u.nread, c.up, c.sent = c, 0, u, 0
	if u.connecting {
		c.phase = phaseConnect
		if d := time.Now().Add(dialTimeout).UnixNano(); c.deadline == 0 || d < c.deadline {
			c.deadline = d
		}
		return
	}
	c.send()
}

// upstreamDeadline bounds the wait for the response head, counted from
// the request's start.
func (c *loopClient) upstreamDeadline() {
	c.deadline = 0
	if d := c.lp.fl.p.cfg.UpstreamTimeout; d > 0 {
		c.deadline = c.start.Add(d).UnixNano()
	}
}

func (c *loopClient) send() {
	u, out := c.up, c.fc.x.out
	c.phase = phaseSend
	for c.sent < len(out) {
		n, err := rawWrite(u.fd, out[c.sent:])
		switch {
		case n > 0:
			c.sent += n
		case err == unix.EAGAIN:
			return // EPOLLOUT resumes
		case err == unix.EINTR:
		default:
			c.upFailed(os.NewSyscallError("write", err))
			return
		}
	}
	c.phase = phaseAwait
	if u.readable {
		c.readHead()
	}
}

// readHead reads the response head (response.readHead).
func (c *loopClient) readHead() {
	u, resp := c.up, &c.fc.x.resp
	for {
		res, end := resp.parse(u.buf[u.r:u.w])
		switch res {
		case parseOK:
			u.r += end
			if resp.status >= 100 && resp.status < 200 {
				continue
			}
			c.gotHead()
			return
		case parseFallback:
			c.upFailed(errors.New("malformed response head"))
			return
		}
		if !u.readable {
			return
		}
		if u.r > 0 {
			u.w = copy(u.buf, u.buf[u.r:u.w])
			u.r = 0
		}
		if u.w == len(u.buf) {
			c.upFailed(errHeadTooLarge)
			return
		}
		n, err := u.fill(u.fd, u.buf[u.w:])
		switch {
		case err == io.EOF:
			c.upFailed(io.ErrUnexpectedEOF)
			return
		case err != nil:
			c.upFailed(err)
			return
		case n == 0:
			return
		}
		u.w += n
		u.nread += n
	}
}

// upFailed handles an attempt that got no response head (roundTrip's and
// serveFast's rules): a reused connection the node-proxy had closed is
// tried again fresh when no app can have seen the request; a refused one
// moves on to another instance; anything else is the error page.
func (c *loopClient) upFailed(err error) {
	lp, u := c.lp, c.up
	c.up = nil
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	if u != nil {
		reused, nread := u.reused, u.nread
		lp.closeUp(u)
		if reused && !timeout && (c.sent == 0 || c.replayable && nread == 0) {
			c.connect(u.addr, true)
			return
		}
	}
	h := c.h
	c.h = nil
	h.inflight.Add(-1)
	route := &c.fc.x.route
	reason := reasonOf(err)
	lp.fl.p.cfg.Metrics.upstreamError(route.ProjectID.String(), reason)
	if reason == "refused" {
		h.down(time.Now())
		c.attempt()
		return
	}
	c.failure = err
	c.fail()
}

// fail answers with the error page for c.failure.
func (c *loopClient) fail() {
	fc := c.fc
	c.status = fc.appendErrorPage(c.failure, c.rid, c.start)
	c.took = time.Since(c.start)
	fc.fl.p.cfg.Log.Debug("upstream failed", "project_id", fc.x.route.ProjectID, "request_id", string(c.rid), "status", c.status, "err", c.failure)
	c.phase, c.deadline = phaseWrite, 0
	c.pending, c.bodyDone, c.upstreamOK = fc.x.out, true, false
	if c.st != nil {
		c.failH2()
		return
	}
	c.pump()
}

// gotHead forwards a response head and starts on its body.
func (c *loopClient) gotHead() {
	fc, u, h := c.fc, c.up, c.h
	resp := &fc.x.resp
	kind := resp.body(isHead(fc.x.req.method))
	now := time.Now()
	if code := resp.proxyError; code != nil {
		if s := string(code); nodeproxy.Retryable(s) {
			// The node-proxy says the instance is gone or refused it: the
			// app saw nothing.
			h.down(now)
			fc.fl.p.cfg.Metrics.upstreamError(fc.x.route.ProjectID.String(), s)
			c.up, c.h = nil, nil
			c.lp.discard(u, resp, kind)
			h.inflight.Add(-1)
			c.failure = errNoInstance
			c.attempt()
			return
		}
	} else {
		h.up()
	}
	c.status, c.took = resp.status, time.Since(c.start)
	if c.st != nil {
		c.gotHeadH2(kind)
		return
	}
	fc.appendResponseHead(kind, c.rid, c.start)
	c.phase, c.deadline, c.kind, c.upstreamOK, c.bodyDone = phaseWrite, 0, kind, true, false
	switch kind {
	case bodyNone:
		c.bodyDone = true
	case bodyLength:
		k := min(int64(u.w-u.r), resp.contentLength)
		fc.x.out = append(fc.x.out, u.buf[u.r:u.r+int(k)]...)
		u.r += int(k)
		c.left = resp.contentLength - k
		c.bodyDone = c.left == 0
	case bodyChunked:
		c.chunks = chunkScanner{}
		n, err := c.chunks.scan(u.buf[u.r:u.w])
		if err != nil {
			c.close()
			return
		}
		fc.x.out = append(fc.x.out, u.buf[u.r:u.r+n]...)
		u.r += n
		c.bodyDone = c.chunks.state == chunkDone
	case bodyEOF:
		if u.w > u.r {
			fc.x.out = appendChunk(fc.x.out, u.buf[u.r:u.w])
		}
		u.r = u.w
		c.upstreamOK = false
	}
	c.pending = fc.x.out
	c.pump()
}

// pump writes what is pending to the client and reads more of the body
// from the node-proxy, until one of them would block or the body ends.
func (c *loopClient) pump() {
	fc := c.fc
	for {
		if c.writing() {
			n, err := c.write(c.pending)
			if n > 0 {
				c.pending = c.pending[n:]
			}
			switch err {
			case nil, unix.EINTR:
				continue
			case unix.EAGAIN:
				return // EPOLLOUT (the stream's window on HTTP/2) resumes
			}
			c.finish(false) // the client is gone
			return
		}
		if c.bodyDone {
			c.finish(true)
			return
		}
		u := c.up
		if !u.readable {
			c.flushH2()
			return // EPOLLIN on the node-proxy resumes
		}
		want := len(u.buf)
		if c.kind == bodyLength {
			want = int(min(int64(want), c.left))
		}
		u.r, u.w = 0, 0
		n, err := u.fill(u.fd, u.buf[:want])
		switch {
		case n > 0:
			switch c.kind {
			case bodyLength:
				c.left -= int64(n)
				c.pending = u.buf[:n]
				c.bodyDone = c.left == 0
			case bodyChunked:
				if c.st != nil {
					m, k, err := c.chunks.strip(u.buf[:n])
					if err != nil {
						c.finish(false)
						return
					}
					u.r, u.w = m, n
					c.pending = u.buf[:k]
				} else {
					m, err := c.chunks.scan(u.buf[:n])
					if err != nil {
						c.finish(false)
						return
					}
					u.r, u.w = m, n
					c.pending = u.buf[:m]
				}
				c.bodyDone = c.chunks.state == chunkDone
			case bodyEOF:
				if c.st != nil {
					c.pending = u.buf[:n]
				} else {
					fc.x.out = appendChunk(fc.x.out[:0], u.buf[:n])
					c.pending = fc.x.out
				}
			}
		case err == io.EOF && c.kind == bodyEOF:
			if c.st == nil {
				c.pending = append(fc.x.out[:0], "0\r\n\r\n"...)
			}
			c.bodyDone = true
		case err != nil:
			c.finish(false) // the response is cut short: close the client
			return
		default:
			c.flushH2()
			return // EPOLLIN on the node-proxy resumes
		}
	}
}

// read reads what the client sent into p (readiness.fill), through the
// record layer on TLS.
func (c *loopClient) read(p []byte) (int, error) {
	t := c.tls
	if t == nil {
		return c.fill(c.fd, p)
	}
	for {
		if n, err := t.take(p); n > 0 || err != nil {
			return n, err
		}
		n, err := c.fill(c.fd, t.inSpace())
		t.filled(n)
		if n == 0 {
			return 0, err
		}
	}
}

// writing says there is something to write to the client.
func (c *loopClient) writing() bool {
	return len(c.pending) > 0 || c.tls != nil && len(c.tls.queued()) > 0
}

// write writes p to the client: n is how much of it is gone (or sealed,
// on TLS); a nil error says all of it, and on TLS all sealed before it,
// is written.
func (c *loopClient) write(p []byte) (int, error) {
	if c.st != nil {
		return c.lh.writeData(c, p)
	}
	if c.tls != nil {
		return writeRecords(c.tls, fdWriter(c.fd), p)
	}
	return rawWrite(c.fd, p)
}

// adopt takes a TLS connection whose handshake crypto/tls made on a
// goroutine (fastConn.toLoop); fc is new, t has what the client sent
// after the handshake.
func (lp *evLoop) adopt(fd int, fc *fastConn, t *tlsRecords) {
	if !lp.enter(fd) {
		t.release()
		return
	}
	lp.fl.onLoop.Add(1)
	c := &loopClient{lp: lp, fd: fd, fc: fc, tls: t}
	c.readable = true // the socket may hold more than the handshake: read until EAGAIN says not
	lp.set(fd, c)
	c.waitRequest(time.Now())
}

// toLoop gives a connection that negotiated HTTP/1.1 (or, h2, HTTP/2)
// over TLS 1.3 to an event loop; false: it stays on this goroutine, as it
// is.
func (fc *fastConn) toLoop(tap *tlsTap, st *tls.ConnectionState, h2 bool) bool {
	fl := fc.fl
	if len(fl.loops) == 0 || fl.closing.Load() {
		return false
	}
	fd, err := socketFD(tap.Conn)
	if err != nil {
		return false
	}
	rec, err := tap.records(st)
	if err != nil {
		fl.p.cfg.Log.Debug("TLS connection stays off the event loops", "err", err)
		unix.Close(fd)
		return false
	}
	remote := tap.Conn.RemoteAddr().String()
	tap.Conn.Close() // the loop's descriptor keeps the socket
	lfc := &fastConn{fl: fl, accepted: fc.accepted, peer: fc.peer, peerText: fc.peerText, trusted: fc.trusted, tlsState: st}
	adopt := func(lp *evLoop) { lp.adoptH2(fd, lfc, rec, remote) }
	if !h2 {
		lfc.buf, fc.buf = fc.buf, nil // HTTP/1.1 reads its requests into it
		adopt = func(lp *evLoop) { lp.adopt(fd, lfc, rec) }
	}
	fl.wg.Add(1)
	lp := fl.pickLoop(nil)
	if !lp.do(func() { adopt(lp) }) {
		lp.left(fd) // the loop has ended: the listener is closed
		rec.release()
	}
	return true
}

// finish ends the exchange; clientOK false closes the client.
func (c *loopClient) finish(clientOK bool) {
	lp, fc := c.lp, c.fc
	if u := c.up; u != nil {
		c.up = nil
		if clientOK && c.upstreamOK && !fc.x.resp.close && !u.hup && u.r == u.w {
			lp.putIdle(u)
		} else {
			lp.closeUp(u)
		}
	}
	if c.h != nil {
		c.h.inflight.Add(-1)
		c.h = nil
	}
	c.pending = nil
	lp.fl.p.cfg.Metrics.requestFast(fc.x.route.ProjectID, c.status, c.took)
	if c.st != nil {
		c.lh.nativeEnd(c, clientOK)
		return
	}
	if !clientOK || fc.x.req.close {
		c.close()
		return
	}
	fc.served.Store(true)
	c.waitRequest(time.Now())
}

// event handles a node-proxy connection's readiness.
func (u *loopUp) event(ev uint32) {
	c := u.client
	if c == nil {
		u.lp.checkIdle(u)
		return
	}
	u.note(ev)
	switch c.phase {
	case phaseConnect:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			c.upFailed(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)})
			return
		}
		u.connecting = false
		c.upstreamDeadline()
		c.send()
	case phaseSend:
		c.send()
	case phaseAwait:
		if u.readable {
			c.readHead()
		}
	case phaseWrite:
		if u.readable && !c.writing() {
			c.pump()
		}
	}
}

// dial opens a connection to a node-proxy at addr (an IP and a port).
func (lp *evLoop) dial(addr string) (*loopUp, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, errNotIP
	}
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if a := ap.Addr(); a.Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", err)}
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err = unix.Connect(fd, sa)
	connecting := err == unix.EINPROGRESS
	if err != nil && !connecting {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: clientEvents, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("epoll_ctl", err)}
	}
	u := &loopUp{lp: lp, fd: fd, addr: addr, buf: make([]byte, upstreamBuf), connecting: connecting}
	lp.set(fd, u)
	return u, nil
}

var errNotIP = errors.New("not an IP address and port")

// takeIdle takes the most recently used idle connection to addr that is
// still young; check also asks that it be provably open.
func (lp *evLoop) takeIdle(addr string, check bool) *loopUp {
	ups := lp.idle[addr]
	now := time.Now()
	for len(ups) > 0 {
		u := ups[len(ups)-1]
		ups[len(ups)-1] = nil
		ups = ups[:len(ups)-1]
		lp.idle[addr] = ups
		lp.nidle--
		if now.Sub(u.idleSince) > idleUpstream || check && !u.open() {
			lp.closeUp(u)
			continue
		}
		u.reused = true
		return u
	}
	return nil
}

// open peeks without blocking: an open idle connection has nothing to read.
func (u *loopUp) open() bool {
	var one [1]byte
	_, _, err := unix.Recvfrom(u.fd, one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == unix.EAGAIN
}

// checkIdle looks at an idle connection epoll woke for: the node-proxy
// closed it (or sent what nobody asked for), or the edge was stale.
func (lp *evLoop) checkIdle(u *loopUp) {
	if u.open() {
		return
	}
	ups := lp.idle[u.addr]
	for i, v := range ups {
		if v == u {
			ups = append(ups[:i], ups[i+1:]...)
			ups[len(ups) : len(ups)+1][0] = nil
			lp.idle[u.addr] = ups
			lp.nidle--
			break
		}
	}
	lp.closeUp(u)
}

func (lp *evLoop) putIdle(u *loopUp) {
	ups := lp.idle[u.addr]
	if len(ups) >= maxIdlePerNode || lp.stopped {
		lp.closeUp(u)
		return
	}
	u.client, u.r, u.w, u.readable, u.idleSince = nil, 0, 0, false, time.Now()
	lp.idle[u.addr] = append(ups, u)
	lp.nidle++
}

func (lp *evLoop) closeUp(u *loopUp) {
	if u.fd >= 0 {
		if lp.fds[u.fd] == u {
			lp.fds[u.fd] = nil
		}
		unix.Close(u.fd)
		u.fd = -1
	}
	u.client = nil
}

// discard drops a refused attempt's response (Proxy.discard): a small
// body already read keeps the connection, anything else closes it.
func (lp *evLoop) discard(u *loopUp, resp *response, kind bodyKind) {
	switch kind {
	case bodyNone:
		if u.r == u.w {
			lp.putIdle(u)
			return
		}
	case bodyLength:
		if int64(u.w-u.r) == resp.contentLength {
			u.r = u.w
			lp.putIdle(u)
			return
		}
	}
	lp.closeUp(u)
}
