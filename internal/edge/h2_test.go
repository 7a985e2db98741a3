package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestH2MultiplexesStreamsAndBodies: on one HTTP/2 connection, many
// requests run at once (a slow one holds up none of the others), and
// request and response bodies larger than every flow-control window arrive
// whole, in both directions at once.
func TestH2MultiplexesStreamsAndBodies(t *testing.T) {
	forEachH2Path(t, testH2MultiplexesStreamsAndBodies)
}

func testH2MultiplexesStreamsAndBodies(t *testing.T, path string) {
	s := newStage(t, path, 10*time.Second)
	release := make(chan struct{})
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
			io.WriteString(w, "slow")
		case "/echo":
			io.Copy(w, r.Body)
		default:
			fmt.Fprintf(w, "fast %s", r.URL.Query().Get("i"))
		}
	}))
	client := newClient(t, s.edge, 1) // one connection: every request a stream on it
	do := func(method, path string, body io.Reader) (string, error) {
		req, _ := http.NewRequest(method, s.edge.URL+path, body)
		req.Host = "shop.zeitwork.app"
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			return "", fmt.Errorf("answered over %s", resp.Proto)
		}
		return string(b), err
	}
	slow := make(chan string, 1)
	go func() {
		b, err := do("GET", "/slow", nil)
		if err != nil {
			b = err.Error()
		}
		slow <- b
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			b, err := do("GET", fmt.Sprintf("/fast?i=%d", i), nil)
			if err == nil && b != fmt.Sprintf("fast %d", i) {
				err = fmt.Errorf("stream %d: %q", i, b)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	close(release)
	if b := <-slow; b != "slow" {
		t.Fatalf("slow stream: %q", b)
	}

	// 3 MiB up and back: more than the stream's (256 KiB) and the
	// connection's (1 MiB) windows, so both are given back as it is read.
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16)
	b, err := do("PUT", "/echo", bytes.NewReader(big))
	if err != nil || b != string(big) {
		t.Fatalf("echo of %d bytes: %d bytes back, %v", len(big), len(b), err)
	}
	// The loop path read all of it on an event loop: its one connection.
	if n, want := s.onLoop(), map[string]int64{pathLoopH2: 1}[path]; n != want {
		t.Fatalf("%d connections on the event loops, want %d", n, want)
	}
}

// TestH2KeepsRequestIDsOutOfTheHeaderTable: the request ID, new on every
// response, is sent as a literal never indexed, so it evicts nothing from
// the client's HPACK table; the fields that repeat are indexed and come
// back as one byte each.
func TestH2KeepsRequestIDsOutOfTheHeaderTable(t *testing.T) {
	forEachH2Path(t, func(t *testing.T, path string) {
		s := newStage(t, path, 10*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=zeitwork")
			// The same Date on both: the two responses may fall in two
			// seconds, and a new date is rightly sent in full.
			w.Header().Set("Date", "Sun, 06 Dec 2026 12:00:00 GMT")
			io.WriteString(w, "hi")
		}))
		h := dialH2(t, s.edge.Listener.Addr().String())
		var blocks []int
		for id := uint32(1); id <= 3; id += 2 {
			h.get(t, id, "/")
			h.until(t, func(f http2.Frame) bool {
				m, ok := f.(*http2.MetaHeadersFrame)
				if !ok || m.StreamID != id {
					return false
				}
				blocks = append(blocks, int(m.HeadersFrame.Length))
				var rid *hpack.HeaderField
				for i := range m.Fields {
					if m.Fields[i].Name == "x-request-id" {
						rid = &m.Fields[i]
					}
				}
				if rid == nil || !rid.Sensitive || len(rid.Value) != 36 {
					t.Fatalf("stream %d: x-request-id %+v, want a never-indexed ID", id, rid)
				}
				return true
			})
		}
		// The second response's content-type is an index into the table.
		if blocks[1] >= blocks[0]-len("text/plain; charset=zeitwork") {
			t.Fatalf("header blocks of %d then %d bytes: the repeated fields were not indexed", blocks[0], blocks[1])
		}
	})
}

// TestH2LeavesOutFieldValuesHTTP2Refuses: a field with a control
// character in its value (HTTP/1.1 carries it; RFC 9113 8.2.1 makes the
// response malformed) is left out, and the rest of the response comes.
// Our node-proxies never send one; this holds the edge to it alone.
func TestH2LeavesOutFieldValuesHTTP2Refuses(t *testing.T) {
	forEachH2Path(t, func(t *testing.T, path string) {
		routes := &Routes{}
		node := rawBackendSaying(t, "HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nX-Good: ok\r\nContent-Length: 2\r\n\r\nhi")
		routes.Store(TableOf(map[string]Route{"shop.zeitwork.app": {ProjectID: id.New(), Backends: []Backend{{InstanceID: id.New(), NodeProxy: node}}}}))
		p := NewProxy(ProxyConfig{Routes: routes, Token: clusterToken, UpstreamTimeout: 10 * time.Second, Log: zlog.Discard()})
		srv := serveProxy(t, p, path)
		h := dialH2(t, strings.TrimPrefix(srv.URL, "https://"))
		h.get(t, 1, "/")
		h.until(t, func(f http2.Frame) bool {
			m, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				return false
			}
			var good string
			for _, f := range m.Fields {
				switch f.Name {
				case "x-bad":
					t.Fatalf("x-bad %q sent", f.Value)
				case "x-good":
					good = f.Value
				}
			}
			if m.PseudoValue("status") != "200" || good != "ok" {
				t.Fatalf("head %v, want 200 with x-good: ok", m.Fields)
			}
			return true
		})
		if n := srv.Listener.(*FastListener).onLoopH2.Load(); path == pathLoopH2 && n == 0 {
			t.Fatal("the request was not served on the loop")
		}
	})
}

// TestH2ClientThatStopsReadingGetsAllOfItLater: a client that opens its
// windows wide and then reads nothing for a while leaves the edge's
// writes waiting for the socket (on the loop path, the loop writes the
// rest when the socket takes more); once it reads, every byte of a
// response far larger than the socket's buffers arrives, in order.
func TestH2ClientThatStopsReadingGetsAllOfItLater(t *testing.T) {
	const size = 32 << 20
	forEachH2Path(t, func(t *testing.T, path string) {
		s := newStage(t, path, 30*time.Second)
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 64<<10)
			for off := 0; off < size; off += len(chunk) {
				for i := range chunk {
					chunk[i] = byte((off + i) % 251)
				}
				w.Write(chunk)
			}
		}))
		h := dialH2(t, s.edge.Listener.Addr().String())
		h.c.SetDeadline(time.Now().Add(30 * time.Second))
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		h.get(t, 1, "/big")
		time.Sleep(500 * time.Millisecond) // the edge writes until the socket is full
		got := 0
		h.until(t, func(f http2.Frame) bool {
			d, ok := f.(*http2.DataFrame)
			if !ok || d.StreamID != 1 {
				return false
			}
			for i, b := range d.Data() {
				if b != byte((got+i)%251) {
					t.Fatalf("byte %d: %d, want %d", got+i, b, (got+i)%251)
				}
			}
			got += len(d.Data())
			return d.StreamEnded()
		})
		if got != size {
			t.Fatalf("%d bytes, want %d", got, size)
		}
	})
}

// TestH2KeepsWithinTheClientsWindows: a client with a small stream
// window gets no DATA beyond it, and the rest of the response as it gives
// window back — one stream at a time and several at once, whose bytes
// share the connection's window.
func TestH2KeepsWithinTheClientsWindows(t *testing.T) {
	const size, window = 100 << 10, 1000
	forEachH2Path(t, func(t *testing.T, path string) {
		s := newStage(t, path, 10*time.Second)
		body := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), size/26+1)[:size]
		s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
		}))
		h := dialH2(t, s.edge.Listener.Addr().String())
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
		streams := []uint32{1, 3, 5}
		for _, id := range streams {
			h.get(t, id, "/")
		}
		got := map[uint32]*bytes.Buffer{}
		left := map[uint32]int{} // of the stream's window
		for _, id := range streams {
			got[id], left[id] = &bytes.Buffer{}, window
		}
		ended := 0
		h.until(t, func(f http2.Frame) bool {
			d, ok := f.(*http2.DataFrame)
			if !ok {
				return false
			}
			n := len(d.Data())
			if left[d.StreamID] -= n; left[d.StreamID] < 0 {
				t.Fatalf("stream %d: %d bytes beyond its window", d.StreamID, -left[d.StreamID])
			}
			got[d.StreamID].Write(d.Data())
			if n > 0 {
				// Give back what was read, as a reading client does.
				h.fr.WriteWindowUpdate(d.StreamID, uint32(n))
				h.fr.WriteWindowUpdate(0, uint32(n))
				left[d.StreamID] += n
			}
			if d.StreamEnded() {
				ended++
			}
			return ended == len(streams)
		})
		for _, id := range streams {
			if !bytes.Equal(got[id].Bytes(), body) {
				t.Fatalf("stream %d: %d bytes, want the %d sent", id, got[id].Len(), size)
			}
		}
		if n := s.onLoopH2(); path == pathLoopH2 && n != int64(len(streams)) {
			t.Fatalf("%d streams served on the event loops, want %d", n, len(streams))
		}
	})
}

// h2Raw is a raw HTTP/2 client connection to the edge, for what a real
// client never does.
type h2Raw struct {
	c    *tls.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func dialH2(t testing.TB, addr string) *h2Raw {
	t.Helper()
	cfg := testTLS(t).client.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatal("h2 not negotiated")
	}
	h := &h2Raw{c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.henc = hpack.NewEncoder(&h.hbuf)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return h
}

// get opens stream id with a GET for path on shop.zeitwork.app.
func (h *h2Raw) get(t testing.TB, id uint32, path string) {
	t.Helper()
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "shop.zeitwork.app"}, {":path", path}} {
		h.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// until reads frames until want says stop; the connection's end is an
// error.
func (h *h2Raw) until(t testing.TB, want func(http2.Frame) bool) {
	t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if want(f) {
			return
		}
	}
}

// BenchmarkH2GET is one GET at a time on one HTTP/2 connection through
// the edge's own server and the direct exchange, to a backend that
// allocates nothing. The client leaves header blocks undecoded and
// reuses its frames, so allocs/op are the edge's own.
func BenchmarkH2GET(b *testing.B) {
	for _, path := range h2Paths {
		b.Run(path, func(b *testing.B) { benchmarkH2GET(b, path) })
	}
}

func benchmarkH2GET(b *testing.B, path string) {
	routes := &Routes{}
	var backends []Backend
	for range 3 {
		backends = append(backends, Backend{InstanceID: id.New(), NodeProxy: rawBackend(b)})
	}
	routes.Store(TableOf(map[string]Route{"shop.zeitwork.app": {ProjectID: id.New(), Backends: backends}}))
	p := NewProxy(ProxyConfig{Routes: routes, Token: clusterToken, UpstreamTimeout: 10 * time.Second, Log: zlog.Discard()})
	h := dialH2(b, strings.TrimPrefix(serveProxy(b, p, path).URL, "https://"))
	h.c.SetDeadline(time.Time{})
	h.fr.ReadMetaHeaders = nil
	h.fr.SetReuseFrames()
	// The responses never give back the connection's window: open it
	// once, as far as it goes.
	h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	stream := uint32(1)
	roundTrip := func() {
		h.get(b, stream, "/")
		stream += 2
		h.until(b, func(f http2.Frame) bool {
			if f.Header().Type == http2.FrameSettings && !f.Header().Flags.Has(http2.FlagSettingsAck) {
				h.fr.WriteSettingsAck()
			}
			return f.Header().StreamID == stream-2 && f.Header().Flags.Has(http2.FlagDataEndStream) && f.Header().Type == http2.FrameData
		})
	}
	for range 100 {
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
}

// TestH2ShutsDownGracefullyAndClosesIdleConnections: when the listener
// closes, a connection is told GOAWAY, its streams in flight are still
// answered, and then it closes; a connection with no stream for the idle
// timeout is closed with a GOAWAY.
func TestH2ShutsDownGracefullyAndClosesIdleConnections(t *testing.T) {
	forEachH2Path(t, testH2ShutsDownGracefullyAndClosesIdleConnections)
}

func testH2ShutsDownGracefullyAndClosesIdleConnections(t *testing.T, path string) {
	s := newStage(t, path, 10*time.Second)
	release, reached := make(chan struct{}), make(chan struct{})
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(reached)
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	p := s.proxy
	h2 := p.Direct()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := p.FastTLSListener
	if path == pathLoopH2 {
		listen = p.LoopTLSListener
	}
	fl := listen(l, testTLS(t).server, h2, 5*time.Second, 300*time.Millisecond)
	defer fl.Close()

	// Idle: a GOAWAY (no error), then the end of the connection.
	idle := dialH2(t, fl.Addr().String())
	idle.get(t, 1, "/a")
	idle.until(t, func(f http2.Frame) bool {
		return f.Header().Type == http2.FrameData && f.(*http2.DataFrame).StreamEnded()
	})
	idle.until(t, func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == http2.ErrCodeNo && g.LastStreamID == 1
	})
	if _, err := idle.fr.ReadFrame(); !errors.Is(err, io.EOF) && !isClosedConn(err) {
		t.Fatalf("after the idle GOAWAY: %v, want the connection closed", err)
	}

	// Shutdown with a stream in flight.
	busy := dialH2(t, fl.Addr().String())
	busy.get(t, 1, "/slow")
	busy.until(t, func(f http2.Frame) bool {
		return f.Header().Type == http2.FrameSettings && f.(*http2.SettingsFrame).IsAck()
	})
	// The request reaches the app before the listener closes.
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request never reached the app")
	}
	shut := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fl.Shutdown(ctx.Done())
		close(shut)
	}()
	busy.until(t, func(f http2.Frame) bool { g, ok := f.(*http2.GoAwayFrame); return ok && g.LastStreamID == 1 })
	// A stream opened after the GOAWAY is not served.
	busy.get(t, 3, "/late")
	close(release)
	var body strings.Builder
	busy.until(t, func(f http2.Frame) bool {
		if f.Header().StreamID == 3 && f.Header().Type == http2.FrameHeaders {
			t.Fatal("a stream opened after GOAWAY was answered")
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			body.Write(d.Data())
			return d.StreamEnded()
		}
		return false
	})
	if body.String() != "done /slow" {
		t.Fatalf("the stream in flight got %q", body.String())
	}
	select {
	case <-shut:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the stream was answered")
	}
}

func isClosedConn(err error) bool {
	return err != nil && (errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset"))
}

// TestH2RefusesWhatItMust: a header list over the limit is answered 431, a
// tunnel 405; streams over the concurrency limit are refused, and a client
// that keeps opening them is sent away.
func TestH2RefusesWhatItMust(t *testing.T) { forEachH2Path(t, testH2RefusesWhatItMust) }

func testH2RefusesWhatItMust(t *testing.T, path string) {
	s := newStage(t, path, 10*time.Second)
	release := make(chan struct{})
	var reached sync.WaitGroup
	reached.Add(h2MaxStreams)
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Done()
		<-release
	}))
	defer close(release)
	h := dialH2(t, s.edge.Listener.Addr().String())
	status := func(id uint32) string {
		var got string
		h.until(t, func(f http2.Frame) bool {
			if m, ok := f.(*http2.MetaHeadersFrame); ok && m.StreamID == id {
				got = m.PseudoValue("status")
				return true
			}
			return false
		})
		return got
	}

	// 70 KiB of fields in one small frame: the same 1 KiB field, indexed
	// by HPACK once and named 69 more times.
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "shop.zeitwork.app"}, {":path", "/"}} {
		h.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for range 70 {
		h.henc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("a", 1000)})
	}
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	if got := status(1); got != "431" {
		t.Fatalf("70 KiB of header fields: status %q, want 431", got)
	}
	// Sent as one 70 KiB field over CONTINUATION frames, they end the
	// connection before they are all read (x/net/http2's framer limits
	// the string and the list: CVE-2023-45288).
	flood := dialH2(t, s.edge.Listener.Addr().String())
	flood.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "shop.zeitwork.app"}, {":path", "/"}, {"x-big", strings.Repeat("a", 70<<10)}} {
		flood.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := flood.hbuf.Bytes()
	flood.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16384], EndStream: true})
	for block = block[16384:]; len(block) > 0; {
		n := min(len(block), 16384)
		flood.fr.WriteContinuation(1, n == len(block), block[:n])
		block = block[n:]
	}
	flood.until(t, func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode != http2.ErrCodeNo
	})

	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "CONNECT"}, {":authority", "shop.zeitwork.app:443"}} {
		h.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: h.hbuf.Bytes(), EndHeaders: true})
	if got := status(3); got != "405" {
		t.Fatalf("CONNECT: status %q, want 405", got)
	}

	// Fill the connection's streams with requests the app holds.
	id := uint32(5)
	for range h2MaxStreams {
		h.get(t, id, "/hold")
		id += 2
	}
	reached.Wait()
	h.get(t, id, "/one-too-many")
	h.until(t, func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == http2.ErrCodeRefusedStream
	})
	// A client that keeps at it (opening and resetting, say) is told to go.
	for range h2RefusedLimit {
		id += 2
		h.get(t, id, "/again")
	}
	h.until(t, func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == http2.ErrCodeEnhanceYourCalm
	})
}
