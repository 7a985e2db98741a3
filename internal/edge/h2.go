package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// The edge's own HTTP/2 server, for the connections that negotiate h2 on
// the fast and loop data paths (what browsers speak). net/http's server
// runs, per request, a goroutine for the handler and hands every frame
// between it, the connection's reader and its writer over channels, and
// flushes each frame with a goroutine of its own: a response is two TLS
// records and about four goroutine switches. Here the connection's
// goroutine reads frames, each stream's handler runs on a goroutine of
// its own, and writes its frames itself under the connection's lock: a
// response that is all there goes out as HEADERS and DATA in one record.
//
// Framing and HPACK are golang.org/x/net/http2's (its Framer checks frame
// sizes, header blocks, CONTINUATION sequences and field validity). The
// rest of RFC 9113 is here: stream states, flow control both ways,
// SETTINGS, PING, GOAWAY, limits on concurrent streams and header lists.
// The handler is the same as net/http's (the direct exchange, which
// leaves the unusual to ReverseProxy), with a ResponseWriter of ours.
const (
	h2MaxStreams    = 250              // SETTINGS_MAX_CONCURRENT_STREAMS, net/http's default
	h2StreamWindow  = 256 << 10        // how much of one request body a client may send ahead
	h2ConnWindow    = 1 << 20          // and of all of a connection's: what it may make us hold
	h2MaxHeaderList = 64 << 10         // as the HTTP/1 server's MaxHeaderBytes
	h2MaxFrame      = 16384            // the largest frame we read (the protocol's default)
	h2WriteTimeout  = 30 * time.Second // a client that reads nothing for this long is gone
	h2ChunkSize     = 16384            // a response's bytes held before they become a frame
	h2MaxWindow     = 1<<31 - 1        // the protocol's largest flow-control window
	h2Preface       = http2.ClientPreface
	h2RefusedLimit  = 4 * h2MaxStreams   // streams refused before the client is told to go
	h2ResetMemory   = 32                 // streams we reset whose late frames we ignore
	h2WindowUpdate  = h2StreamWindow / 4 // body bytes read before the client hears of it
)

// errH2StreamGone: the client reset the stream, or the connection ended.
var errH2StreamGone = errors.New("http2: stream closed")

// h2Conn is one client connection speaking HTTP/2.
type h2Conn struct {
	fc      *fastConn
	c       net.Conn
	handler http.Handler
	state   *tls.ConnectionState
	remote  string
	ctx     context.Context
	cancel  context.CancelFunc
	fr      *http2.Framer
	hb      headerBlock // decodes HEADERS for the reader (h2_headers.go)
	lastID  uint32      // the highest stream id the client opened (written by the reader under mu)
	refused int         // streams refused for exceeding the limit (reader only)

	lh *loopH2 // the event loop that reads the connection (h2_loop.go); nil: this goroutine does

	mu   sync.Mutex   // the writer: out, the framer's writes, henc; and all below
	cond sync.Cond    // windows grew, body bytes came, output drained, a stream or the connection ended
	out  h2Out        // frames written and not yet flushed
	henc hpackEncoder // h2_hpack.go

	streams       map[uint32]*h2Stream
	reset         [h2ResetMemory]uint32 // ids we reset: their late frames are ignored
	nreset        int
	active        int   // streams whose handler runs
	sendWindow    int64 // what we may send on the connection
	recvWindow    int64 // what the client may still send on it
	recvUnacked   int64 // consumed and not yet given back
	peerInitial   int64 // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerMaxFrame  int
	closed        bool
	goingAway     bool
	linger        bool // a connection error was sent: read what the client still sends before closing
	idle          *time.Timer
	writeDeadline time.Time
	spare         [][]byte // body buffers of finished streams, for the next ones
}

// h2Stream is one request: its state (under the connection's lock) and
// the ResponseWriter its handler writes to.
type h2Stream struct {
	sc     *h2Conn
	id     uint32
	cancel context.CancelFunc

	// Under sc.mu.
	sendWindow   int64
	recvWindow   int64
	remoteClosed bool // the client sent END_STREAM
	localClosed  bool // we sent END_STREAM: with remoteClosed, the stream is closed
	gone         bool // reset by either side, or the connection ended
	body         *h2Body
	watch        *headWatch // told when the stream goes (the direct exchange's wait)
	watchGen     uint64
	native       *loopClient // the loop's exchange serving it (h2_native.go); nil: a handler goroutine

	// The handler's (ResponseWriter).
	header      http.Header
	status      int
	isHead      bool
	wroteHeader bool
	sentHeader  bool
	done        bool
	pending     []byte
	declared    int64 // Content-Length the handler set; -1 none
	written     int64
	trailers    []string // the names Trailer announced
}

// h2Body is a request body: DATA frames the reader appended, read by the
// handler; every byte read is given back to the client's windows.
type h2Body struct {
	st       *h2Stream
	buf      []byte // under sc.mu
	eof      bool
	err      error
	closed   bool  // the handler closed it: the rest is dropped
	declared int64 // content-length; -1 none
	received int64
	unacked  int64
}

// serveH2 serves an h2 connection whose TLS handshake is done.
func (fc *fastConn) serveH2(tc *tls.Conn, state *tls.ConnectionState) {
	fl := fc.fl
	sc := newH2Conn(fc, state, tc.RemoteAddr().String())
	sc.c = tc
	sc.init(tc)
	defer sc.close()

	if d := fl.readHeaderTimeout; d > 0 {
		tc.SetReadDeadline(time.Now().Add(d))
	}
	var preface [len(h2Preface)]byte
	if _, err := io.ReadFull(tc, preface[:]); err != nil || string(preface[:]) != h2Preface {
		return
	}
	if !sc.greet() {
		return
	}
	// The client's first frame must be its SETTINGS, within the time a
	// client has for its request head; after that, the idle timer rules.
	f, err := sc.readFrame()
	if !sc.first(f, err) {
		return
	}
	tc.SetReadDeadline(time.Time{})
	for {
		if !sc.handleRead(sc.readFrame()) {
			return
		}
	}
}

func newH2Conn(fc *fastConn, state *tls.ConnectionState, remote string) *h2Conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &h2Conn{
		fc: fc, handler: fc.fl.h2, state: state, remote: remote, ctx: ctx, cancel: cancel,
		streams: map[uint32]*h2Stream{}, sendWindow: 65535, recvWindow: h2ConnWindow, peerInitial: 65535, peerMaxFrame: 16384,
	}
}

// init sets up the framer (reading from r) and the HPACK encoder.
func (sc *h2Conn) init(r io.Reader) {
	sc.cond.L = &sc.mu
	sc.fr = http2.NewFramer(&sc.out, r)
	sc.fr.SetMaxReadFrameSize(h2MaxFrame)
	sc.hb.init()
	sc.henc.init()
}

// greet sends the server's SETTINGS once the client's preface came.
func (sc *h2Conn) greet() bool {
	sc.mu.Lock()
	sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	sc.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	err := sc.flushLocked()
	sc.mu.Unlock()
	if err != nil {
		return false
	}
	// From here a closing listener may send GOAWAY (our SETTINGS are out).
	sc.fc.h2.Store(sc)
	return true
}

// first takes the client's first frame, which must be its SETTINGS; the
// idle timer starts. false ends the connection.
func (sc *h2Conn) first(f http2.Frame, err error) bool {
	if sf, ok := f.(*http2.SettingsFrame); err != nil || !ok || sf.IsAck() {
		sc.goAway(http2.ErrCodeProtocol)
		return false
	}
	fl := sc.fc.fl
	if fl.idleTimeout > 0 {
		sc.mu.Lock()
		sc.idle = time.AfterFunc(fl.idleTimeout, sc.onIdle)
		sc.mu.Unlock()
	}
	if !sc.handle(f) {
		return false
	}
	if fl.closing.Load() {
		sc.shutdown()
	}
	return true
}

// handleRead acts on what the framer read; false ends the connection.
func (sc *h2Conn) handleRead(f http2.Frame, err error) bool {
	if err != nil {
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			sc.opened(se.StreamID) // a stream opened, and failed at once
			sc.resetStream(se.StreamID, se.Code)
			return true
		case errors.As(err, &ce):
			sc.goAway(http2.ErrCode(ce))
		case errors.Is(err, http2.ErrFrameTooLarge):
			sc.goAway(http2.ErrCodeFrameSize)
		}
		return false
	}
	return sc.handle(f)
}

// connErr is a connection error: GOAWAY with the code, then close.
type connErr http2.ErrCode

// handle acts on one frame; false ends the connection.
func (sc *h2Conn) handle(f http2.Frame) bool {
	var err error
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		err = sc.onHeaders(f)
	case *http2.DataFrame:
		err = sc.onData(f)
	case *http2.SettingsFrame:
		err = sc.onSettings(f)
	case *http2.WindowUpdateFrame:
		err = sc.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			sc.mu.Lock()
			sc.fr.WritePing(true, f.Data)
			err = sc.flushLocked()
			sc.mu.Unlock()
		}
	case *http2.RSTStreamFrame:
		if f.StreamID > sc.lastID {
			return sc.goAway(http2.ErrCodeProtocol) // an idle stream
		}
		sc.mu.Lock()
		if st := sc.streams[f.StreamID]; st != nil {
			sc.endStreamLocked(st)
		}
		err = sc.flushLocked() // the window its unread body held
		sc.mu.Unlock()
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			sc.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		sc.mu.Lock()
		sc.goingAway = true
		sc.mu.Unlock()
	case *http2.PushPromiseFrame:
		return sc.goAway(http2.ErrCodeProtocol) // clients do not push
	}
	if err == nil {
		return true
	}
	var ce connErr // here only: its address escapes, a heap allocation
	if errors.As(err, &ce) {
		return sc.goAway(http2.ErrCode(ce))
	}
	return false
}

func (e connErr) Error() string { return http2.ErrCode(e).String() }

// onHeaders opens a stream (or takes a request's trailers).
func (sc *h2Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connErr(http2.ErrCodeProtocol)
	}
	if id <= sc.lastID {
		sc.mu.Lock()
		st := sc.streams[id]
		sc.mu.Unlock()
		switch {
		case st == nil:
			return connErr(http2.ErrCodeStreamClosed)
		case !f.StreamEnded():
			sc.resetStream(id, http2.ErrCodeProtocol) // trailers end the stream
		default:
			sc.mu.Lock()
			if st.remoteClosed && st.localClosed {
				// Closed, though its handler has not let it go yet.
				sc.mu.Unlock()
				return connErr(http2.ErrCodeStreamClosed)
			}
			if st.remoteClosed {
				sc.mu.Unlock()
				sc.resetStream(id, http2.ErrCodeStreamClosed)
				return nil
			}
			sc.endBodyLocked(st)
			sc.mu.Unlock()
		}
		return nil
	}
	sc.opened(id)
	if f.HasPriority() && f.Priority.StreamDep == id {
		sc.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	sc.mu.Lock()
	if sc.goingAway || sc.closed {
		sc.mu.Unlock()
		return nil // past our GOAWAY: ignored
	}
	if sc.active >= h2MaxStreams {
		sc.mu.Unlock()
		if sc.refused++; sc.refused > h2RefusedLimit {
			return connErr(http2.ErrCodeEnhanceYourCalm)
		}
		sc.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	sc.mu.Unlock()

	if sc.lh != nil && f.StreamEnded() {
		if c := sc.lh.nativeRequest(f); c != nil {
			// On the loop, as an HTTP/1.1 request would be (h2_native.go).
			st := &h2Stream{sc: sc, id: id, cancel: noCancel, recvWindow: h2StreamWindow, remoteClosed: true, native: c}
			sc.mu.Lock()
			st.sendWindow = sc.peerInitial
			sc.streams[id] = st
			sc.active++
			if sc.idle != nil {
				sc.idle.Stop()
			}
			sc.mu.Unlock()
			sc.lh.startNative(c, st)
			return nil
		}
	}
	r, status := sc.request(f)
	if r == nil {
		if status == 0 {
			sc.resetStream(id, http2.ErrCodeProtocol)
			return nil
		}
	}
	ctx, cancel := context.WithCancel(sc.ctx)
	st := &h2Stream{sc: sc, id: id, cancel: cancel, header: http.Header{}, declared: -1,
		recvWindow: h2StreamWindow, remoteClosed: f.StreamEnded()}
	sc.mu.Lock()
	st.sendWindow = sc.peerInitial
	if !f.StreamEnded() {
		st.body = &h2Body{st: st, declared: -1}
		if r != nil {
			st.body.declared = r.ContentLength
		}
	}
	sc.streams[id] = st
	sc.active++
	if sc.idle != nil {
		sc.idle.Stop()
	}
	sc.mu.Unlock()
	if r == nil {
		go st.answer(status) // a request we refuse with a status of its own
		return nil
	}
	if st.body != nil {
		r.Body = st.body
	} else {
		r.Body = http.NoBody
	}
	st.isHead = r.Method == http.MethodHead
	go st.run(r.WithContext(ctx))
	return nil
}

// opened records the highest stream id the client opened (GOAWAY names
// it, from any goroutine).
func (sc *h2Conn) opened(id uint32) {
	sc.mu.Lock()
	if id > sc.lastID {
		sc.lastID = id
	}
	sc.mu.Unlock()
}

// connectionHeaders are the fields HTTP/2 forbids (RFC 9113 8.2.2).
var connectionHeaders = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true}

// request builds the request a HEADERS frame opens; nil with a status to
// answer, or with 0 for a malformed request (a stream error).
func (sc *h2Conn) request(f *http2.MetaHeadersFrame) (*http.Request, int) {
	if f.Truncated {
		return nil, http.StatusRequestHeaderFieldsTooLarge
	}
	method, scheme, authority, path, ok := requestPseudo(f)
	if !ok {
		return nil, 0 // :status or :protocol: not a request we take
	}
	if method == "" || !httpguts.ValidHostHeader(authority) {
		return nil, 0
	}
	if method == http.MethodConnect {
		if scheme != "" || path != "" || authority == "" {
			return nil, 0
		}
		return nil, http.StatusMethodNotAllowed // no tunnels through the edge
	}
	if scheme == "" || path == "" || path[0] != '/' && !(path == "*" && method == http.MethodOptions) {
		return nil, 0
	}
	header := make(http.Header, len(f.Fields))
	var cookies []string
	for _, hf := range f.RegularFields() {
		switch {
		case connectionHeaders[hf.Name]:
			return nil, 0
		case hf.Name == "te" && hf.Value != "trailers":
			return nil, 0
		case hf.Name == "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := http.CanonicalHeaderKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")} // RFC 9113 8.2.3
	}
	if authority == "" {
		authority = header.Get("Host")
	}
	delete(header, "Host")
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, 0
	}
	contentLength := int64(-1)
	if f.StreamEnded() {
		contentLength = 0
	} else if cl := header["Content-Length"]; len(cl) > 0 {
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || len(cl) > 1 && slicesDiffer(cl) {
			return nil, 0
		}
		contentLength = n
	}
	return &http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: header, Host: authority,
		RemoteAddr: sc.remote, RequestURI: path, TLS: sc.state, ContentLength: contentLength,
	}, 0
}

// requestPseudo is a request's pseudo-header fields; false: one that no
// request has (:status, or :protocol, which the edge does not offer).
func requestPseudo(f *http2.MetaHeadersFrame) (method, scheme, authority, path string, ok bool) {
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default:
			return "", "", "", "", false
		}
	}
	return method, scheme, authority, path, true
}

func slicesDiffer(vs []string) bool {
	for _, v := range vs[1:] {
		if v != vs[0] {
			return true
		}
	}
	return false
}

// onData takes a request body's bytes.
func (sc *h2Conn) onData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	if id > sc.lastID {
		return connErr(http2.ErrCodeProtocol) // an idle stream
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if n > sc.recvWindow {
		return connErr(http2.ErrCodeFlowControl)
	}
	sc.recvWindow -= n
	st := sc.streams[id]
	if st == nil || st.remoteClosed || st.body == nil {
		sc.giveBackLocked(n) // nobody will read it
		if st == nil && sc.wasReset(id) {
			return nil // we reset it: frames in flight are expected
		}
		if st != nil {
			sc.endStreamLocked(st)
		}
		sc.writeRSTLocked(id, http2.ErrCodeStreamClosed)
		return sc.flushLocked()
	}
	if n > st.recvWindow {
		sc.giveBackLocked(n)
		sc.endStreamLocked(st)
		sc.writeRSTLocked(id, http2.ErrCodeFlowControl)
		return sc.flushLocked()
	}
	st.recvWindow -= n
	b := st.body
	data := f.Data()
	// Padding is nobody's to read: give it back at once.
	if pad := n - int64(len(data)); pad > 0 {
		sc.giveBackLocked(pad)
		st.recvWindow += pad
	}
	b.received += int64(len(data))
	if b.declared >= 0 && (b.received > b.declared || f.StreamEnded() && b.received != b.declared) {
		sc.giveBackLocked(int64(len(data)))
		sc.endStreamLocked(st)
		sc.writeRSTLocked(id, http2.ErrCodeProtocol)
		return sc.flushLocked()
	}
	if b.closed {
		sc.giveBackLocked(int64(len(data)))
	} else {
		b.buf = append(b.buf, data...)
	}
	if f.StreamEnded() {
		sc.endBodyLocked(st)
	}
	sc.cond.Broadcast()
	return sc.flushLocked() // window updates, if any
}

// endBodyLocked: the client sent all of the stream's request.
func (sc *h2Conn) endBodyLocked(st *h2Stream) {
	st.remoteClosed = true
	if st.body != nil {
		st.body.eof = true
	}
	if st.done {
		delete(sc.streams, st.id)
	}
	sc.cond.Broadcast()
}

// giveBackLocked returns n bytes of the connection's window to the
// client, in batches.
func (sc *h2Conn) giveBackLocked(n int64) {
	sc.recvWindow += n
	sc.recvUnacked += n
	if sc.recvUnacked >= h2WindowUpdate {
		sc.fr.WriteWindowUpdate(0, uint32(sc.recvUnacked))
		sc.recvUnacked = 0
	}
}

func (sc *h2Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connErr(ce)
			}
			return connErr(http2.ErrCodeProtocol)
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - sc.peerInitial
			sc.peerInitial = int64(s.Val)
			for _, st := range sc.streams {
				if st.sendWindow+delta > h2MaxWindow {
					return connErr(http2.ErrCodeFlowControl)
				}
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			sc.peerMaxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			sc.henc.setLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sc.fr.WriteSettingsAck()
	sc.cond.Broadcast()
	return sc.flushLocked()
}

func (sc *h2Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if sc.sendWindow+inc > h2MaxWindow {
			return connErr(http2.ErrCodeFlowControl)
		}
		sc.sendWindow += inc
		sc.cond.Broadcast()
		return nil
	}
	if f.StreamID > sc.lastID {
		return connErr(http2.ErrCodeProtocol) // an idle stream
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		return nil // closed: a late update
	}
	if st.sendWindow+inc > h2MaxWindow {
		sc.endStreamLocked(st)
		sc.writeRSTLocked(f.StreamID, http2.ErrCodeFlowControl)
		return sc.flushLocked()
	}
	st.sendWindow += inc
	sc.cond.Broadcast()
	return nil
}

// resetStream ends a stream with RST_STREAM.
func (sc *h2Conn) resetStream(id uint32, code http2.ErrCode) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st := sc.streams[id]; st != nil {
		sc.endStreamLocked(st)
	}
	sc.writeRSTLocked(id, code)
	sc.flushLocked()
}

func (sc *h2Conn) writeRSTLocked(id uint32, code http2.ErrCode) {
	sc.reset[sc.nreset%h2ResetMemory] = id
	sc.nreset++
	sc.fr.WriteRSTStream(id, code)
}

func (sc *h2Conn) wasReset(id uint32) bool {
	for _, r := range sc.reset {
		if r == id {
			return true
		}
	}
	return false
}

// endStreamLocked: the stream was reset (either way). Its handler sees its
// context canceled and its writes fail; its body's unread bytes go back.
func (sc *h2Conn) endStreamLocked(st *h2Stream) {
	if st.gone {
		return
	}
	st.gone = true
	st.cancel()
	if st.native != nil {
		sc.lh.aborted = append(sc.lh.aborted, st.native) // the loop lets go of its exchange
	}
	if st.watch != nil {
		st.watch.leave(st.watchGen)
		st.watch = nil
	}
	if b := st.body; b != nil {
		if b.err == nil {
			b.err = errH2StreamGone
		}
		sc.giveBackLocked(int64(len(b.buf)))
		b.buf = nil
	}
	delete(sc.streams, st.id)
	sc.cond.Broadcast()
}

// watchHead has w told (leave) if the stream goes before it is called
// again with nil: what context.AfterFunc on the request's context does,
// without its allocations.
func (st *h2Stream) watchHead(w *headWatch, gen uint64) {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if w != nil && st.gone {
		w.leave(gen)
		return
	}
	st.watch, st.watchGen = w, gen
}

// goAway ends the connection with a connection error; always false.
func (sc *h2Conn) goAway(code http2.ErrCode) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.closed {
		sc.fr.WriteGoAway(sc.lastID, code, nil)
		sc.linger = sc.flushLocked() == nil
	}
	return false
}

// shutdown tells the client no new streams will be taken; the connection
// closes once the streams it has are answered.
func (sc *h2Conn) shutdown() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.goingAway || sc.closed {
		return
	}
	sc.goingAway = true
	sc.fr.WriteGoAway(sc.lastID, http2.ErrCodeNo, nil)
	sc.flushLocked()
	if sc.active == 0 {
		sc.closeConnLocked()
	}
}

// onIdle closes a connection that had no stream for the idle timeout.
func (sc *h2Conn) onIdle() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.active > 0 || sc.closed {
		return
	}
	sc.fr.WriteGoAway(sc.lastID, http2.ErrCodeNo, nil)
	sc.flushLocked()
	sc.closeConnLocked()
}

// closeConnLocked closes the connection, which ends its reader (and
// with it the streams).
func (sc *h2Conn) closeConnLocked() {
	if sc.lh != nil {
		sc.lh.closeSoon()
		return
	}
	sc.c.Close()
}

// end ends every stream; it returns whether to linger (see close).
func (sc *h2Conn) end() bool {
	sc.mu.Lock()
	sc.closed = true
	for _, st := range sc.streams {
		sc.endStreamLocked(st)
	}
	if sc.idle != nil {
		sc.idle.Stop()
	}
	sc.cond.Broadcast()
	linger := sc.linger
	sc.out.b = nil
	sc.mu.Unlock()
	sc.cancel()
	return linger
}

// close ends every stream and the connection (the reader returned).
func (sc *h2Conn) close() {
	if sc.end() {
		// Closing with the client's bytes unread would reset the
		// connection, and a reset can destroy the GOAWAY before the
		// client reads it: end TLS, and read (for a moment) what it sends.
		if tc, ok := sc.c.(*tls.Conn); ok {
			tc.CloseWrite()
		}
		sc.c.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, sc.c, 1<<20)
	}
	sc.c.Close()
}

// flushLocked writes what the framer buffered, bounded in time: a client
// that reads nothing is dropped rather than holding the connection. On
// an event loop it writes what the socket takes now, and the loop the
// rest.
func (sc *h2Conn) flushLocked() error {
	if len(sc.out.b) == 0 {
		return nil
	}
	if sc.closed {
		sc.out.b = sc.out.b[:0] // nobody to write to
		return net.ErrClosed
	}
	if sc.lh != nil {
		return sc.lh.flushLocked()
	}
	// Moving the deadline costs a timer update; do it only when it is
	// half spent.
	now := time.Now()
	if sc.writeDeadline.Sub(now) < h2WriteTimeout/2 {
		sc.writeDeadline = now.Add(h2WriteTimeout)
		sc.c.SetWriteDeadline(sc.writeDeadline)
	}
	_, err := sc.c.Write(sc.out.b)
	sc.out.written()
	if err != nil {
		sc.closed = true
		sc.c.Close()
		sc.cond.Broadcast()
		return err
	}
	return nil
}

// h2Out is where the framer writes: frames wait in it to be flushed.
type h2Out struct{ b []byte }

func (o *h2Out) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), nil
}

// written empties the buffer, keeping it unless it grew large.
func (o *h2Out) written() {
	if cap(o.b) > 4*h2ChunkSize {
		o.b = nil
		return
	}
	o.b = o.b[:0]
}

// roomLocked waits while more than a chunk is waiting for the socket
// (on an event loop, which writes it when the socket takes more):
// what a handler writes is held back by the client's reading.
func (sc *h2Conn) roomLocked() error {
	for sc.lh != nil && len(sc.out.b) > 4*h2ChunkSize && !sc.closed {
		sc.cond.Wait()
	}
	if sc.closed {
		return errH2StreamGone
	}
	return nil
}

// run serves one request with the handler.
func (st *h2Stream) run(r *http.Request) {
	defer st.finish()
	st.sc.handler.ServeHTTP(st, r)
}

// answer responds to a request the edge does not take: a tunnel, or a
// header list over the limit.
func (st *h2Stream) answer(status int) {
	defer st.finish()
	code, msg := "method_not_allowed", "The edge does not open tunnels."
	if status == http.StatusRequestHeaderFieldsTooLarge {
		code, msg = "header_too_large", "The request's header fields are larger than the edge takes."
	}
	page(st, status, code, http.StatusText(status), msg)
}

// finish ends the response (or resets the stream if the handler panicked
// or wrote less than it announced), and lets the stream go.
func (st *h2Stream) finish() {
	sc := st.sc
	p := recover()
	if p != nil && p != http.ErrAbortHandler {
		sc.fc.fl.p.cfg.Log.Error("http2 handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	}
	short := st.declared >= 0 && st.written != st.declared && !st.isHead && bodyAllowed(st.status)
	if p == nil && !short {
		st.done = true
		st.send(true, false)
	}
	sc.mu.Lock()
	if !st.gone && (p != nil || short) {
		sc.endStreamLocked(st)
		sc.writeRSTLocked(st.id, http2.ErrCodeInternal)
		sc.flushLocked()
	}
	st.done = true
	if !st.gone {
		if !st.remoteClosed {
			// Answered before the client sent all of its body: it may stop.
			sc.writeRSTLocked(st.id, http2.ErrCodeNo)
			sc.flushLocked()
		}
		st.gone = true
		if st.body != nil {
			sc.giveBackLocked(int64(len(st.body.buf)))
			st.body.buf = nil
		}
		delete(sc.streams, st.id)
		sc.flushLocked()
	}
	if cap(st.pending) > 0 && cap(st.pending) <= 2*h2ChunkSize && len(sc.spare) < 4 {
		sc.spare = append(sc.spare, st.pending[:0])
	}
	st.pending = nil
	st.cancel()
	sc.active--
	if sc.active == 0 {
		switch {
		case sc.goingAway && !sc.closed:
			sc.closeConnLocked()
		case sc.idle != nil:
			sc.idle.Reset(sc.fc.fl.idleTimeout)
		}
	}
	sc.cond.Broadcast()
	sc.mu.Unlock()
}

// takeBuffer is a body buffer a finished stream left, if there is one.
func (sc *h2Conn) takeBuffer() []byte {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if n := len(sc.spare); n > 0 {
		b := sc.spare[n-1]
		sc.spare = sc.spare[:n-1]
		return b
	}
	return nil
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

// Header is the response's header.
func (st *h2Stream) Header() http.Header { return st.header }

// WriteHeader sets the response's status; 1xx responses go out at once.
func (st *h2Stream) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if st.wroteHeader {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		st.sendInformational(code)
		return
	}
	st.wroteHeader, st.status = true, code
	if cl := st.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			st.declared = n
		} else {
			st.header.Del("Content-Length")
		}
	}
	for _, v := range st.header["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = http.CanonicalHeaderKey(strings.TrimSpace(name)); name != "" {
				st.trailers = append(st.trailers, name)
			}
		}
	}
}

// Write queues body bytes; they become DATA frames when enough are
// queued, at Flush, or when the handler returns.
func (st *h2Stream) Write(b []byte) (int, error) {
	if !st.wroteHeader {
		st.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(st.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if st.isHead {
		return len(b), nil
	}
	st.written += int64(len(b))
	if st.declared >= 0 && st.written > st.declared {
		return 0, http.ErrContentLength
	}
	if st.pending == nil {
		st.pending = st.sc.takeBuffer()
	}
	st.pending = append(st.pending, b...)
	if len(st.pending) >= h2ChunkSize {
		if err := st.send(false, false); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// Flush sends what was written.
func (st *h2Stream) Flush() { st.FlushError() }

// FlushError sends what was written (http.ResponseController uses it).
func (st *h2Stream) FlushError() error {
	if !st.wroteHeader {
		st.WriteHeader(http.StatusOK)
	}
	return st.send(false, true)
}

// send writes the response head (once) and the pending bytes as frames,
// within the flow-control windows; end also ends the stream (with the
// trailers, if any). The frames are flushed when flush or end is set, or
// when send must wait for a window.
func (st *h2Stream) send(end, flush bool) error {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.gone || sc.closed {
		return errH2StreamGone
	}
	trailers := end && st.hasTrailers()
	if !st.sentHeader {
		if !st.wroteHeader {
			st.wroteHeader, st.status = true, http.StatusOK
		}
		st.sentHeader = true
		endStream := end && len(st.pending) == 0 && !trailers
		st.encodeHeaderLocked(endStream)
		if endStream {
			st.localClosed = true
			return sc.flushLocked()
		}
	}
	endSent := false
	data := st.pending
	for len(data) > 0 {
		n := int64(min(len(data), sc.peerMaxFrame))
		n = min(n, st.sendWindow, sc.sendWindow)
		if n <= 0 {
			// Out of window: what is written must reach the client for it
			// to give more.
			if err := sc.flushLocked(); err != nil {
				return err
			}
			sc.cond.Wait()
			if st.gone || sc.closed {
				return errH2StreamGone
			}
			continue
		}
		endSent = end && int(n) == len(data) && !trailers
		sc.fr.WriteData(st.id, endSent, data[:n])
		st.sendWindow -= n
		sc.sendWindow -= n
		data = data[n:]
		if len(sc.out.b) >= h2ChunkSize {
			if err := sc.flushLocked(); err != nil {
				return err
			}
			if err := sc.roomLocked(); err != nil {
				return err
			}
			if st.gone {
				return errH2StreamGone
			}
		}
	}
	st.pending = st.pending[:0]
	switch {
	case trailers:
		st.encodeTrailersLocked()
	case end && !endSent:
		sc.fr.WriteData(st.id, true, nil) // the body went out before
	}
	if end {
		st.localClosed = true
	}
	if end || flush {
		return sc.flushLocked()
	}
	return nil
}

// hasTrailers says whether the handler set trailer values.
func (st *h2Stream) hasTrailers() bool {
	for _, k := range st.trailers {
		if len(st.header[k]) > 0 {
			return true
		}
	}
	for k := range st.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// encodeHeaderLocked writes the response head as HEADERS (and
// CONTINUATION) frames.
func (st *h2Stream) encodeHeaderLocked(endStream bool) {
	sc := st.sc
	sc.henc.begin()
	sc.henc.field(":status", statusText(st.status), false)
	hasDate := false
	for k, vs := range st.header {
		if k == "Trailer" || strings.HasPrefix(k, http.TrailerPrefix) || st.isTrailer(k) {
			continue
		}
		name := lowerHeader(k)
		if connectionHeaders[name] || name == "te" {
			continue
		}
		if name == "date" {
			hasDate = true
		}
		// A request ID is new on every response: kept out of the
		// client's table, it evicts none of the fields that repeat
		// (and costs the encoder no table insert).
		unique := name == "x-request-id"
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				sc.henc.field(name, v, unique)
			}
		}
	}
	if !hasDate && bodyAllowed(st.status) {
		sc.henc.field("date", dateString(time.Now()), false)
	}
	if len(st.trailers) > 0 {
		sc.henc.field("trailer", strings.Join(st.trailers, ", "), false)
	}
	st.writeBlockLocked(endStream)
}

// sendInformational writes a 1xx response with the header so far.
func (st *h2Stream) sendInformational(code int) {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.gone || sc.closed {
		return
	}
	sc.henc.begin()
	sc.henc.field(":status", strconv.Itoa(code), false)
	for k, vs := range st.header {
		name := lowerHeader(k)
		if connectionHeaders[name] {
			continue
		}
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				sc.henc.field(name, v, false)
			}
		}
	}
	st.writeBlockLocked(false)
	sc.flushLocked()
}

func (st *h2Stream) isTrailer(k string) bool {
	for _, t := range st.trailers {
		if t == k {
			return true
		}
	}
	return false
}

// encodeTrailersLocked writes the trailers, ending the stream.
func (st *h2Stream) encodeTrailersLocked() {
	sc := st.sc
	sc.henc.begin()
	for k, vs := range st.header {
		name := k
		if strings.HasPrefix(k, http.TrailerPrefix) {
			name = k[len(http.TrailerPrefix):]
		} else if !st.isTrailer(k) {
			continue
		}
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				sc.henc.field(strings.ToLower(name), v, false)
			}
		}
	}
	st.writeBlockLocked(true)
}

// writeBlockLocked sends the encoded block as HEADERS, split into CONTINUATION
// frames if it is larger than a frame.
func (st *h2Stream) writeBlockLocked(endStream bool) {
	sc := st.sc
	block := sc.henc.buf
	first := true
	for first || len(block) > 0 {
		n := min(len(block), sc.peerMaxFrame)
		frag, endHeaders := block[:n], n == len(block)
		if first {
			sc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: frag, EndStream: endStream, EndHeaders: endHeaders})
			first = false
		} else {
			sc.fr.WriteContinuation(st.id, endHeaders, frag)
		}
		block = block[n:]
	}
}

// statusText is a status as :status says it, without allocating for the
// common ones.
func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 301:
		return "301"
	case 302:
		return "302"
	case 304:
		return "304"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}

// commonLower are the lower-case forms of the fields most responses have,
// so that encoding them allocates nothing.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Age", "Cache-Control", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Type", "Date", "Etag", "Expires", "Last-Modified", "Location", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Vary", "X-Request-Id", "X-Content-Type-Options", "X-Frame-Options", "X-Zeitwork-Error", "Retry-After", "Access-Control-Allow-Origin"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerHeader(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// Read reads the request body, giving what was read back to the client's
// windows.
func (b *h2Body) Read(p []byte) (int, error) {
	sc := b.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for len(b.buf) == 0 && !b.eof && b.err == nil && !b.closed {
		sc.cond.Wait()
	}
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	sc.giveBackLocked(int64(n))
	st := b.st
	if !st.remoteClosed && !st.gone {
		st.recvWindow += int64(n)
		b.unacked += int64(n)
		if b.unacked >= h2WindowUpdate {
			sc.fr.WriteWindowUpdate(st.id, uint32(b.unacked))
			b.unacked = 0
		}
	}
	sc.flushLocked()
	return n, nil
}

// Close drops the rest of the body.
func (b *h2Body) Close() error {
	sc := b.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !b.closed {
		b.closed = true
		sc.giveBackLocked(int64(len(b.buf)))
		b.buf = nil
		sc.flushLocked()
		sc.cond.Broadcast()
	}
	return nil
}
