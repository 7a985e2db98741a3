package edge

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// upstreamPool keeps idle connections to node-proxies for the fast path.
// Unlike net/http's Transport it runs no goroutine per idle connection:
// a connection the node-proxy closed while idle is found out when it is
// next used (and the request retried on another connection when the
// node-proxy provably saw none of it, as net/http does).
type upstreamPool struct {
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	mu    sync.RWMutex
	nodes map[string]*nodePool
}

type nodePool struct {
	mu   sync.Mutex
	idle []*upConn // most recently used last
}

// upConn is a connection to a node-proxy with its read buffer.
type upConn struct {
	c          net.Conn
	node       *nodePool
	buf        []byte // buf[r:w] read and not consumed
	r, w       int
	nread      int // bytes read for the current response
	idleSince  time.Time
	deadline   bool // a read deadline is set
	raw        syscall.RawConn
	probe      func(fd uintptr) bool
	probeAlive bool
	one        [1]byte
}

func (pl *upstreamPool) node(addr string) *nodePool {
	pl.mu.RLock()
	np := pl.nodes[addr]
	pl.mu.RUnlock()
	if np != nil {
		return np
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if np = pl.nodes[addr]; np == nil {
		if pl.nodes == nil {
			pl.nodes = map[string]*nodePool{}
		}
		np = &nodePool{}
		pl.nodes[addr] = np
	}
	return np
}

// get takes an idle connection to addr or dials one; reused says which.
// check asks for a cheap test that an idle connection is still open, for
// requests that could not be sent again if it was not.
func (pl *upstreamPool) get(addr string, check bool, now time.Time) (uc *upConn, reused bool, err error) {
	np := pl.node(addr)
	for {
		np.mu.Lock()
		n := len(np.idle)
		if n == 0 {
			np.mu.Unlock()
			break
		}
		uc = np.idle[n-1]
		np.idle[n-1] = nil
		np.idle = np.idle[:n-1]
		np.mu.Unlock()
		if now.Sub(uc.idleSince) > idleUpstream || check && !uc.alive() {
			uc.c.Close()
			continue
		}
		uc.nread = 0
		return uc, true, nil
	}
	c, err := pl.dial(context.Background(), "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	uc = &upConn{c: c, node: np, buf: make([]byte, upstreamBuf)}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			uc.raw = raw
			uc.probe = uc.probeFD
		}
	}
	return uc, false, nil
}

// put returns a connection whose exchange ended cleanly (about now: the
// clock read at the request's start is close enough to age idle ones).
func (pl *upstreamPool) put(uc *upConn, now time.Time) {
	uc.r, uc.w = 0, 0
	uc.idleSince = now
	np := uc.node
	np.mu.Lock()
	if len(np.idle) >= maxIdlePerNode {
		np.mu.Unlock()
		uc.c.Close()
		return
	}
	np.idle = append(np.idle, uc)
	np.mu.Unlock()
}

// alive reads without blocking: an open idle connection has nothing to
// read (EAGAIN); one the peer closed reads EOF.
func (uc *upConn) alive() bool {
	if uc.raw == nil {
		return true
	}
	uc.probeAlive = false
	if err := uc.raw.Read(uc.probe); err != nil {
		return false
	}
	return uc.probeAlive
}

func (uc *upConn) probeFD(fd uintptr) bool {
	n, err := syscall.Read(int(fd), uc.one[:])
	uc.probeAlive = n < 0 && errors.Is(err, syscall.EAGAIN)
	return true // never wait for readiness: this is a probe
}

// setDeadline bounds the wait for response headers, counted from now
// (the request's start, a moment ago).
func (uc *upConn) setDeadline(now time.Time, d time.Duration) {
	if d > 0 {
		uc.c.SetReadDeadline(now.Add(d))
		uc.deadline = true
	}
}

func (uc *upConn) clearDeadline() {
	if uc.deadline {
		uc.c.SetReadDeadline(time.Time{})
		uc.deadline = false
	}
}

// fill reads more into buf[w:]; the buffer is compacted first.
func (uc *upConn) fill() error {
	if uc.r > 0 {
		uc.w = copy(uc.buf, uc.buf[uc.r:uc.w])
		uc.r = 0
	}
	if uc.w == len(uc.buf) {
		return errHeadTooLarge
	}
	n, err := uc.c.Read(uc.buf[uc.w:])
	uc.w += n
	uc.nread += n
	if n > 0 {
		return nil
	}
	return err
}

var errHeadTooLarge = errors.New("response head larger than the fast path's buffer")

// response is a parsed node-proxy response head; slices point into the
// upConn's buffer until its body is forwarded.
type response struct {
	status        int
	reason        []byte
	fields        [maxHeaders]field
	n             int
	contentLength int64
	hasLength     bool
	chunked       bool
	close         bool
	hasDate       bool
	proxyError    []byte
	connTokens    [8][]byte
	nc            int
}

// readHead reads and parses a response head, skipping 1xx interim
// responses (the fast path never sends Expect or Upgrade).
func (resp *response) readHead(uc *upConn) error {
	for {
		res, end := resp.parse(uc.buf[uc.r:uc.w])
		switch res {
		case parseOK:
			uc.r += end
			if resp.status >= 100 && resp.status < 200 {
				continue
			}
			return nil
		case parseFallback:
			return errors.New("malformed response head")
		}
		if err := uc.fill(); err != nil {
			return err
		}
	}
}

func (resp *response) parse(b []byte) (parseResult, int) {
	resp.status, resp.reason, resp.n, resp.nc = 0, nil, 0, 0
	resp.contentLength, resp.hasLength, resp.chunked, resp.close, resp.hasDate, resp.proxyError = 0, false, false, false, false, nil
	line, next, res := nextLine(b, 0)
	if res != parseOK {
		return res, 0
	}
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '1' && line[7] != '0') || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return parseFallback, 0
	}
	resp.close = line[7] == '0'
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return parseFallback, 0
		}
		resp.status = resp.status*10 + int(c-'0')
	}
	if resp.status < 100 {
		return parseFallback, 0
	}
	if len(line) > 13 {
		resp.reason = line[13:]
	}
	for {
		line, next, res = nextLine(b, next)
		if res != parseOK {
			return res, 0
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || resp.n == maxHeaders || !isToken(line[:colon]) {
			return parseFallback, 0
		}
		f := &resp.fields[resp.n]
		resp.n++
		f.name, f.value, f.drop = line[:colon], trimOWS(line[colon+1:]), false
		if !resp.classify(f) {
			return parseFallback, 0
		}
	}
	// With chunked framing a Content-Length is wrong, and without it a
	// Trailer announces nothing: neither goes on.
	for j := range resp.n {
		f := &resp.fields[j]
		if resp.chunked && resp.hasLength && eqFold(f.name, "content-length") || !resp.chunked && eqFold(f.name, "trailer") {
			f.drop = true
		}
	}
	// Fields named by Connection are hop-by-hop too.
	for i := range resp.nc {
		for j := range resp.n {
			if eqFoldBytes(resp.fields[j].name, resp.connTokens[i]) {
				resp.fields[j].drop = true
			}
		}
	}
	return parseOK, next
}

func (resp *response) classify(f *field) bool {
	n, v := f.name, f.value
	switch len(n) {
	case 2:
		if eqFold(n, "te") {
			f.drop = true
		}
	case 4:
		if eqFold(n, "date") {
			resp.hasDate = true
		}
	case 7:
		if eqFold(n, "upgrade") {
			f.drop = true
		}
	case 10:
		switch {
		case eqFold(n, "connection"):
			f.drop = true
			for len(v) > 0 {
				var tok []byte
				if i := bytes.IndexByte(v, ','); i >= 0 {
					tok, v = trimOWS(v[:i]), v[i+1:]
				} else {
					tok, v = trimOWS(v), nil
				}
				switch {
				case len(tok) == 0, eqFold(tok, "keep-alive"):
				case eqFold(tok, "close"):
					resp.close = true
				case resp.nc == len(resp.connTokens):
					return false
				default:
					resp.connTokens[resp.nc] = tok
					resp.nc++
				}
			}
		case eqFold(n, "keep-alive"):
			f.drop = true
		}
	case 12:
		if eqFold(n, "x-request-id") {
			f.drop = true // the edge's, already set, is the one
		}
	case 14:
		if eqFold(n, "content-length") {
			l, ok := parseLength(v)
			if !ok || resp.hasLength && l != resp.contentLength {
				return false
			}
			if resp.hasLength {
				f.drop = true // a repeat of the same value
			}
			resp.contentLength, resp.hasLength = l, true
		}
	case 16:
		if eqFold(n, "proxy-connection") {
			f.drop = true
		}
	case 17:
		if eqFold(n, "transfer-encoding") {
			if !eqFold(v, "chunked") || resp.chunked {
				return false
			}
			resp.chunked, f.drop = true, true
		}
	case 18:
		if eqFold(n, "proxy-authenticate") {
			f.drop = true
		}
	case 19:
		if eqFold(n, "proxy-authorization") {
			f.drop = true
		}
	case 22:
		if eqFold(n, "x-zeitwork-proxy-error") {
			resp.proxyError, f.drop = v, true
		}
	}
	return true
}

// bodyKind is how a response's body is delimited.
type bodyKind int

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyEOF
)

func (resp *response) body(head bool) bodyKind {
	switch {
	case head, resp.status == 204, resp.status == 304:
		return bodyNone
	case resp.chunked:
		return bodyChunked // chunked wins over a Content-Length (RFC 9112 6.3)
	case resp.hasLength:
		if resp.contentLength == 0 {
			return bodyNone
		}
		return bodyLength
	}
	return bodyEOF
}

// chunkScanner finds the end of a chunked body while its bytes are passed
// on unchanged.
type chunkScanner struct {
	state   int
	size    int64
	digits  int
	left    int64
	trailer []byte // the trailer section, when strip (h2_native.go) took the framing out
}

const (
	chunkSize = iota
	chunkExt
	chunkSizeLF
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailerStart
	chunkTrailerLine
	chunkTrailerLineLF
	chunkTrailerLF
	chunkDone
)

var errBadChunk = errors.New("malformed chunked encoding")

// scan consumes b up to the end of the body; n is how much of b belongs
// to it.
func (s *chunkScanner) scan(b []byte) (n int, err error) {
	for n < len(b) && s.state != chunkDone {
		c := b[n]
		switch s.state {
		case chunkSize:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if s.digits == 15 {
					return n, errBadChunk
				}
				s.size = s.size<<4 | int64(unhex(c))
				s.digits++
			case c == ';': // net/http takes no whitespace before an extension
				if s.digits == 0 {
					return n, errBadChunk
				}
				s.state = chunkExt
			case c == '\r':
				s.state = chunkSizeLF
			default:
				return n, errBadChunk
			}
			n++
		case chunkExt:
			switch c {
			case '\r':
				s.state = chunkSizeLF
			case '\n':
				return n, errBadChunk // a bare LF, as net/http refuses it
			}
			n++
		case chunkSizeLF:
			if c != '\n' {
				return n, errBadChunk
			}
			if err := s.sizeDone(); err != nil {
				return n, err
			}
			n++
		case chunkData:
			k := int64(len(b) - n)
			if k > s.left {
				k = s.left
			}
			n += int(k)
			s.left -= k
			if s.left == 0 {
				s.state = chunkDataCR
			}
		case chunkDataCR:
			if c != '\r' {
				return n, errBadChunk
			}
			s.state = chunkDataLF
			n++
		case chunkDataLF:
			if c != '\n' {
				return n, errBadChunk
			}
			s.state, s.size, s.digits = chunkSize, 0, 0
			n++
		case chunkTrailerStart:
			switch c {
			case '\r':
				s.state = chunkTrailerLF
			case '\n':
				return n, errBadChunk
			default:
				s.state = chunkTrailerLine
			}
			n++
		case chunkTrailerLine:
			switch c {
			case '\r':
				s.state = chunkTrailerLineLF
			case '\n':
				return n, errBadChunk
			}
			n++
		case chunkTrailerLineLF:
			if c != '\n' {
				return n, errBadChunk
			}
			s.state = chunkTrailerStart
			n++
		case chunkTrailerLF:
			if c != '\n' {
				return n, errBadChunk
			}
			s.state = chunkDone
			n++
		}
	}
	return n, nil
}

func (s *chunkScanner) sizeDone() error {
	if s.digits == 0 {
		return errBadChunk
	}
	if s.size == 0 {
		s.state = chunkTrailerStart
		return nil
	}
	s.state, s.left = chunkData, s.size
	return nil
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// dateCache is the Date header's value, made once a second.
var dateCache atomic.Pointer[dateValue]

type dateValue struct {
	sec int64
	b   []byte
	s   string // b, for HTTP/2's header encoder
}

func currentDate(now time.Time) *dateValue {
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		b := now.UTC().AppendFormat(nil, "Mon, 02 Jan 2006 15:04:05 GMT")
		d = &dateValue{sec: now.Unix(), b: b, s: string(b)}
		dateCache.Store(d)
	}
	return d
}

func appendDate(b []byte, now time.Time) []byte { return append(b, currentDate(now).b...) }

func dateString(now time.Time) string { return currentDate(now).s }

func eqFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
