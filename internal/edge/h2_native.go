package edge

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// HTTP/2 streams served on the event loop (EDGE_DATA_PATH=loop).
//
// A stream's handler on a goroutine of its own costs a wake-up of an idle
// thread to start it and a park in Go's poller while the app answers. A
// request without a body — what a browser mostly sends — needs neither:
// the loop that read its HEADERS writes it to a node-proxy connection in
// its epoll set and writes the answer back as the stream's frames, with
// the HTTP/1.1 exchange's own code (fast_loop.go: instance choice,
// retries only when no app saw the request, passive health, timeouts,
// error pages, metrics). The request is spelled as the HTTP/1.1 head it
// would have been and read by the fast path's parser, so that both paths
// forward exactly the same thing, and anything that parser leaves to
// net/http goes to a handler goroutine here too, as do requests with a
// body, those that ask for trailers (gRPC), hosts with no instance, and
// node-proxies named by host name.
//
// The response is the node-proxy's, its head as HEADERS and its body (a
// chunked one without its framing) as DATA, within the client's
// flow-control windows: a stream out of window, or a socket with more
// than a few chunks waiting, stops reading its node-proxy until a
// WINDOW_UPDATE, a SETTINGS or the socket makes room.

// noCancel is a native stream's cancel: it has no context.
func noCancel() {}

var nativePool = sync.Pool{New: func() any {
	return &loopClient{fc: &fastConn{buf: make([]byte, clientBuf)}}
}}

// nativeRequest makes the loop's exchange for a request that came whole
// in f (END_STREAM); nil leaves it to a handler goroutine.
func (h *loopH2) nativeRequest(f *http2.MetaHeadersFrame) *loopClient {
	if f.Truncated {
		return nil
	}
	method, scheme, authority, path, ok := requestPseudo(f)
	if !ok || method == "" || method == "CONNECT" || scheme == "" || authority == "" || !validTarget(path) {
		return nil
	}
	c := nativePool.Get().(*loopClient)
	fc := c.fc
	b := append(fc.buf[:0], method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, authority...)
	b = append(b, "\r\n"...)
	cookies := 0
	for _, hf := range f.RegularFields() {
		switch {
		case hf.Name == "cookie":
			cookies++
			continue
		case hf.Name == "host", hf.Name == "te", connectionHeaders[hf.Name]:
			// A second authority, trailers asked for, or a field HTTP/2
			// forbids: the handler's rules answer them.
			nativePool.Put(c)
			return nil
		}
		b = append(b, hf.Name...)
		b = append(b, ": "...)
		b = append(b, hf.Value...)
		b = append(b, "\r\n"...)
	}
	if cookies > 0 {
		// One field, its crumbs joined (RFC 9113 8.2.3).
		b = append(b, "Cookie: "...)
		sep := false
		for _, hf := range f.RegularFields() {
			if hf.Name == "cookie" {
				if sep {
					b = append(b, "; "...)
				}
				b = append(b, hf.Value...)
				sep = true
			}
		}
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if len(b) > clientBuf {
		nativePool.Put(c) // its buffer grew: a new one next time
		return nil
	}
	fc.buf = b[:cap(b)]
	fc.r, fc.w = len(b), len(b)
	fc.acquire()
	q := &fc.x.req
	if q.parse(b) != parseOK || q.contentLength != 0 || q.teTrailers {
		h.release(c)
		return nil
	}
	route, ok := h.lp.fl.p.cfg.Routes.Load().lookupBytes(q.host)
	if !ok || len(route.Backends) == 0 {
		h.release(c)
		return nil
	}
	for i := range route.Backends {
		if _, err := netip.ParseAddrPort(route.Backends[i].NodeProxy); err != nil {
			h.release(c)
			return nil
		}
	}
	fc.x.route = route
	return c
}

// validTarget says whether path is a request target the HTTP/1.1 request
// line can carry as it is.
func validTarget(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		if b := path[i]; b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}

// startNative starts the exchange of a stream the loop serves.
func (h *loopH2) startNative(c *loopClient, st *h2Stream) {
	lc := h.sc.fc
	fc := c.fc
	fc.fl, fc.peer, fc.peerText, fc.trusted, fc.tlsState = lc.fl, lc.peer, lc.peerText, lc.trusted, lc.tlsState
	c.lp, c.lh, c.st = h.lp, h, st
	h.natives = append(h.natives, c)
	h.lp.fl.onLoopH2.Add(1)
	c.begin()
}

// release gives a native exchange's state back.
func (h *loopH2) release(c *loopClient) {
	fc := c.fc
	fc.release()
	buf := fc.buf
	*fc = fastConn{buf: buf}
	*c = loopClient{fc: fc}
	nativePool.Put(c)
}

// gotHeadH2 sends the response head as HEADERS (ending the stream when
// there is no body) and starts on the body (gotHead).
func (c *loopClient) gotHeadH2(kind bodyKind) {
	u := c.up
	c.phase, c.deadline, c.kind, c.upstreamOK, c.bodyDone = phaseWrite, 0, kind, true, false
	c.pending = nil
	switch kind {
	case bodyNone:
		c.bodyDone = true
	case bodyLength:
		resp := &c.fc.x.resp
		k := min(int64(u.w-u.r), resp.contentLength)
		c.pending = u.buf[u.r : u.r+int(k)]
		u.r += int(k)
		c.left = resp.contentLength - k
		c.bodyDone = c.left == 0
	case bodyChunked:
		c.chunks = chunkScanner{}
		n, k, err := c.chunks.strip(u.buf[u.r:u.w])
		if err != nil {
			c.finish(false)
			return
		}
		c.pending = u.buf[u.r : u.r+k]
		u.r += n
		c.bodyDone = c.chunks.state == chunkDone
	case bodyEOF:
		c.pending = u.buf[u.r:u.w]
		u.r = u.w
		c.upstreamOK = false
	}
	if !c.lh.writeHead(c, kind == bodyNone) {
		c.finish(false)
		return
	}
	c.pump()
}

// failH2 sends the error page fail made, read back from its HTTP/1.1
// form.
func (c *loopClient) failH2() {
	fc := c.fc
	resp := &fc.x.resp
	res, end := resp.parse(fc.x.out)
	if res != parseOK {
		c.finish(false)
		return
	}
	c.kind = resp.body(isHead(fc.x.req.method))
	c.pending = nil
	if c.kind != bodyNone {
		c.pending = fc.x.out[end:]
	}
	if !c.lh.writeHead(c, c.kind == bodyNone) {
		c.finish(false)
		return
	}
	c.pump()
}

// writeHead encodes the response head in c.fc.x.resp as the stream's
// HEADERS; false: the stream is gone.
func (h *loopH2) writeHead(c *loopClient, endStream bool) bool {
	sc, st, fc := h.sc, c.st, c.fc
	resp := &fc.x.resp
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.gone || sc.closed {
		return false
	}
	sc.henc.begin()
	sc.henc.field(":status", statusText(resp.status), false)
	for i := range resp.n {
		f := &resp.fields[i]
		if f.drop {
			continue
		}
		// No string is made for the field unless the table gains an entry.
		name := sc.henc.lowerName(f.name)
		if connectionHeaders[string(name)] || string(name) == "te" || string(name) == "content-length" && resp.chunked ||
			!httpguts.ValidHeaderFieldValue(unsafe.String(unsafe.SliceData(f.value), len(f.value))) {
			continue // a control character would make the response malformed (RFC 9113 8.2.1)
		}
		sc.henc.value(f.value, false)
	}
	// Never indexed: the request ID is new on every response.
	sc.henc.field("x-request-id", unsafe.String(unsafe.SliceData(c.rid), len(c.rid)), true)
	if !resp.hasDate {
		sc.henc.field("date", dateString(time.Now()), false)
	}
	st.writeBlockLocked(endStream)
	if endStream {
		st.localClosed = true
	}
	return true
}

// writeData sends p as the stream's DATA, as far as the windows allow:
// unix.EAGAIN says the stream waits (for its window, or for the socket)
// and is resumed when it may go on.
func (h *loopH2) writeData(c *loopClient, p []byte) (int, error) {
	sc, st := h.sc, c.st
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.gone || sc.closed {
		return 0, errH2StreamGone
	}
	n := 0
	for n < len(p) {
		k := int64(min(len(p)-n, sc.peerMaxFrame))
		k = min(k, st.sendWindow, sc.sendWindow)
		if k <= 0 {
			break
		}
		sc.fr.WriteData(st.id, false, p[n:n+int(k)])
		st.sendWindow -= k
		sc.sendWindow -= k
		n += int(k)
		if len(sc.out.b) >= h2ChunkSize {
			if err := sc.flushLocked(); err != nil {
				return n, err
			}
		}
	}
	if n < len(p) || len(sc.out.b) > 4*h2ChunkSize {
		if err := sc.flushLocked(); err != nil {
			return n, err
		}
		if !c.waiting {
			c.waiting = true
			h.waiting = append(h.waiting, c)
		}
		return n, unix.EAGAIN
	}
	return n, nil
}

// flushH2 sends what a native stream wrote while it waits for more of
// its body (a stream of events goes out as it comes).
func (c *loopClient) flushH2() {
	if c.st == nil {
		return
	}
	sc := c.lh.sc
	sc.mu.Lock()
	if !sc.closed {
		sc.flushLocked()
	}
	sc.mu.Unlock()
}

// resume goes on with the streams that waited, now that a window or the
// socket may have room.
func (h *loopH2) resume() {
	if len(h.waiting) == 0 || h.closed {
		return
	}
	ws := h.waiting
	h.waiting = h.spare[:0]
	for _, c := range ws {
		c.waiting = false
	}
	for _, c := range ws {
		if c.st != nil && !c.waiting {
			c.pump()
		}
	}
	clear(ws)
	h.spare = ws[:0]
}

// reap ends the exchanges of streams that were reset or whose
// connection ended: the node-proxy connection closes, so the app hears
// of it, as when an HTTP/1.1 client leaves (abandon; counted as nginx's
// 499 when the app had not answered).
func (h *loopH2) reap() {
	for len(h.aborted) > 0 {
		c := h.aborted[len(h.aborted)-1]
		h.aborted = h.aborted[:len(h.aborted)-1]
		status := c.status
		if c.phase != phaseWrite {
			status = statusClientClosed
		}
		h.lp.fl.p.cfg.Metrics.requestFast(c.fc.x.route.ProjectID, status, time.Since(c.start))
		h.nativeEnd(c, false)
	}
}

// nativeEnd ends a native stream's exchange: ok, its response is whole
// and the stream ends; else it is reset (if the client has not reset
// it). The stream is let go as a handler's is when it returns.
func (h *loopH2) nativeEnd(c *loopClient, ok bool) {
	lp, sc, st := h.lp, h.sc, c.st
	if u := c.up; u != nil {
		c.up = nil
		lp.closeUp(u)
	}
	if c.h != nil {
		c.h.inflight.Add(-1)
		c.h = nil
	}
	sc.mu.Lock()
	if !st.gone && !sc.closed {
		if ok && !st.localClosed {
			if len(c.chunks.trailer) == 0 || !st.writeTrailersLocked(c.chunks.trailer) {
				sc.fr.WriteData(st.id, true, nil)
			}
			st.localClosed = true
		} else if !ok {
			sc.writeRSTLocked(st.id, http2.ErrCodeInternal)
		}
		sc.flushLocked()
	}
	st.done, st.native = true, nil
	if !st.gone {
		st.gone = true
		delete(sc.streams, st.id)
	}
	sc.active--
	if sc.active == 0 {
		switch {
		case sc.goingAway && !sc.closed:
			sc.closeConnLocked()
		case sc.idle != nil && !sc.closed:
			sc.idle.Reset(sc.fc.fl.idleTimeout)
		}
	}
	sc.mu.Unlock()
	for i, n := range h.natives {
		if n == c {
			last := len(h.natives) - 1
			h.natives[i] = h.natives[last]
			h.natives[last] = nil
			h.natives = h.natives[:last]
			break
		}
	}
	for i, a := range h.aborted {
		if a == c {
			h.aborted = append(h.aborted[:i], h.aborted[i+1:]...)
			break
		}
	}
	if c.waiting {
		for i, w := range h.waiting {
			if w == c {
				h.waiting = append(h.waiting[:i], h.waiting[i+1:]...)
				break
			}
		}
	}
	h.release(c)
}

// strip is scan that also takes the chunked framing out: the body's data
// in b moves to b[:data]; n is how much of b belongs to the body.
func (s *chunkScanner) strip(b []byte) (n, data int, err error) {
	for n < len(b) && s.state != chunkDone {
		if s.state == chunkData {
			k := int(min(int64(len(b)-n), s.left))
			data += copy(b[data:], b[n:n+k])
			n += k
			s.left -= int64(k)
			if s.left == 0 {
				s.state = chunkDataCR
			}
			continue
		}
		trailer := s.state >= chunkTrailerStart
		m, err := s.scan(b[n : n+1])
		if trailer && m > 0 {
			if len(s.trailer) >= maxTrailer {
				return n, data, errBadChunk
			}
			s.trailer = append(s.trailer, b[n])
		}
		n += m
		if err != nil {
			return n, data, err
		}
	}
	return n, data, nil
}

// maxTrailer is the most of a chunked body's trailer section the loop
// holds to send it on as HTTP/2 trailers.
const maxTrailer = 16 << 10

// writeTrailersLocked ends the stream with the trailer fields of a chunked
// response (the section's lines, each ending in CRLF, the blank one
// last); false: there were none to send.
func (st *h2Stream) writeTrailersLocked(section []byte) bool {
	sc := st.sc
	sc.henc.begin()
	fields := 0
	for len(section) > 0 {
		i := bytes.Index(section, []byte("\r\n"))
		if i < 0 {
			break
		}
		line := section[:i]
		section = section[i+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			continue
		}
		name := strings.ToLower(string(line[:colon]))
		value := string(trimOWS(line[colon+1:]))
		if connectionHeaders[name] || trailerForbidden[name] || !httpguts.ValidHeaderFieldValue(value) {
			continue
		}
		sc.henc.field(name, value, false)
		fields++
	}
	if fields == 0 {
		return false
	}
	st.writeBlockLocked(true)
	return true
}

// trailerForbidden are the fields a trailer may not carry (RFC 9110 6.5.1:
// framing, routing, and what the head alone decides).
var trailerForbidden = map[string]bool{"content-length": true, "te": true, "trailer": true, "host": true,
	"content-type": true, "content-encoding": true, "content-range": true, "cache-control": true, "expires": true,
	"date": true, "location": true, "set-cookie": true, "authorization": true, "www-authenticate": true}
