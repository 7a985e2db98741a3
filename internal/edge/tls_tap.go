package edge

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How a loop comes to own a TLS connection (tls_records.go has why).
//
// crypto/tls runs the handshake on a tlsTap, which stands between it and
// the socket and keeps three things a loop needs afterwards:
//
//   - the application traffic secrets. crypto/tls gives them out only
//     through Config.KeyLogWriter, so each connection's handshake runs
//     with a configuration (GetConfigForClient) whose KeyLogWriter is its
//     own tap: the secrets stay in the memory of the process that holds
//     them anyway, and are never written anywhere.
//   - what the client sent after its Finished (a request, often in the
//     same packet): the tap gives crypto/tls one record at a time, so it
//     never reads past the handshake's last record.
//   - what crypto/tls wrote, to count the records it sealed with the
//     server's application key (a session ticket, or none): the tap tries
//     to open each of them with that key, and the edge's own records
//     carry on from that sequence number.
//
// A connection that negotiated HTTP/1.1 over TLS 1.3 then moves to a loop;
// any other (HTTP/2, ACME's acme-tls/1, TLS 1.2) stays with crypto/tls,
// and the tap becomes a plain pass-through.

// tlsTap is a client connection under crypto/tls during the handshake.
type tlsTap struct {
	net.Conn
	buf     *[]byte // read from Conn; buf[r:w] not given to crypto/tls
	r, w    int
	left    int  // bytes of the current record crypto/tls has yet to get
	through bool // the handshake is over: reads and writes pass through

	mu                         sync.Mutex // the key log's writes come from crypto/tls
	wrote                      []byte
	clientSecret, serverSecret []byte
}

func newTLSTap(c net.Conn) *tlsTap {
	return &tlsTap{Conn: c, buf: tlsBufPool.Get().(*[]byte)}
}

// Read gives crypto/tls the bytes of one record at most.
func (t *tlsTap) Read(p []byte) (int, error) {
	if t.through {
		if t.r < t.w {
			n := copy(p, (*t.buf)[t.r:t.w])
			t.r += n
			if t.r == t.w {
				t.dropBuf()
			}
			return n, nil
		}
		return t.Conn.Read(p)
	}
	if t.buf == nil {
		return 0, net.ErrClosed
	}
	if t.left == 0 {
		if err := t.need(recordHeader); err != nil {
			if t.r == t.w {
				return 0, err
			}
			n := copy(p, (*t.buf)[t.r:t.w]) // a broken header: crypto/tls says what is wrong with it
			t.r += n
			return n, nil
		}
		b := (*t.buf)[t.r:]
		t.left = recordHeader + (int(b[3])<<8 | int(b[4]))
	}
	if err := t.need(1); err != nil {
		return 0, err
	}
	n := copy(p[:min(len(p), t.left)], (*t.buf)[t.r:t.w])
	t.r += n
	t.left -= n
	return n, nil
}

// need reads until k bytes are at hand.
func (t *tlsTap) need(k int) error {
	b := *t.buf
	for t.w-t.r < k {
		if t.r > 0 {
			t.w = copy(b, b[t.r:t.w])
			t.r = 0
		}
		n, err := t.Conn.Read(b[t.w:])
		t.w += n
		if err != nil && t.w-t.r < k {
			return err
		}
	}
	return nil
}

// Write keeps a copy of what crypto/tls writes during the handshake.
func (t *tlsTap) Write(p []byte) (int, error) {
	if !t.through {
		t.mu.Lock()
		t.wrote = append(t.wrote, p...)
		t.mu.Unlock()
	}
	return t.Conn.Write(p)
}

// Close closes the connection. Past the handshake a read may be under
// way on another goroutine: the buffer is then left to the reads.
func (t *tlsTap) Close() error {
	if !t.through {
		t.dropBuf()
	}
	return t.Conn.Close()
}

func (t *tlsTap) dropBuf() {
	if t.buf != nil {
		tlsBufPool.Put(t.buf)
		t.buf, t.r, t.w = nil, 0, 0
	}
}

// pass ends the tap's part: from now on it passes bytes through.
func (t *tlsTap) pass() {
	if t == nil {
		return
	}
	t.through = true
	t.mu.Lock()
	t.wrote, t.clientSecret, t.serverSecret = nil, nil, nil
	t.mu.Unlock()
	if t.buf != nil && t.r == t.w {
		t.dropBuf()
	}
}

// tapKeyLog is a tap as its handshake's KeyLogWriter.
type tapKeyLog tlsTap

// Write takes a key log line: LABEL <client random> <secret>.
func (k *tapKeyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &k.clientSecret
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &k.serverSecret
	default:
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	*dst = secret
	k.mu.Unlock()
	return len(line), nil
}

// tapConfig is cfg with each handshake on a tap logging its keys to it.
func tapConfig(cfg *tls.Config) *tls.Config {
	base := cfg.Clone()
	base.GetConfigForClient = nil
	outer := cfg.Clone()
	inner := cfg.GetConfigForClient
	outer.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base
		if inner != nil {
			r, err := inner(hello)
			if err != nil {
				return nil, err
			}
			if r != nil {
				c = r
			}
		}
		t, ok := hello.Conn.(*tlsTap)
		if !ok {
			return c, nil
		}
		// A clone per handshake, whose session ticket keys are the
		// listener's (GetConfigForClient's rule).
		c = c.Clone()
		c.KeyLogWriter = (*tapKeyLog)(t)
		return c, nil
	}
	return outer
}

// records makes the record layer the handshake left behind: the keys,
// the server's sequence number, and what the client sent after its
// Finished. The tap keeps its state when it fails.
func (t *tlsTap) records(st *tls.ConnectionState) (*tlsRecords, error) {
	if st.Version != tls.VersionTLS13 {
		return nil, errors.New("not TLS 1.3")
	}
	t.mu.Lock()
	cs, ss, wrote := t.clientSecret, t.serverSecret, t.wrote
	t.mu.Unlock()
	if cs == nil || ss == nil {
		return nil, errors.New("no traffic secrets logged")
	}
	if t.left != 0 {
		return nil, errors.New("handshake ended within a record")
	}
	rec, err := newTLSRecords(st.CipherSuite, cs, ss)
	if err != nil {
		return nil, err
	}
	rec.out.seq = sealedWith(&rec.out, wrote)
	rec.rbuf, rec.rr, rec.rw = t.buf, t.r, t.w
	t.buf, t.r, t.w = nil, 0, 0
	if rec.rr == rec.rw {
		rec.releaseIn()
	}
	return rec, nil
}

// sealedWith counts the records in wrote that k's key sealed (k.seq 0):
// those crypto/tls sent after switching to it.
func sealedWith(k *trafficKeys, wrote []byte) uint64 {
	var seq uint64
	var scratch []byte
	for len(wrote) >= recordHeader {
		n := int(wrote[3])<<8 | int(wrote[4])
		if len(wrote) < recordHeader+n {
			break
		}
		if wrote[0] == recordAppData {
			scratch = append(scratch[:0], wrote[recordHeader:recordHeader+n]...)
			k.seq = seq
			if _, err := k.aead.Open(scratch[:0], k.nonce(), scratch, wrote[:recordHeader]); err == nil {
				seq++
			}
		}
		wrote = wrote[recordHeader+n:]
	}
	k.seq = 0
	return seq
}

// socketFD is a duplicate of c's descriptor, non-blocking, for a loop;
// closing c then leaves the socket open.
func socketFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// tlsConn is a loop's TLS connection back on a goroutine (a hand-over to
// the goroutine path): a net.Conn on the record layer.
type tlsConn struct {
	net.Conn
	t      *tlsRecords
	rmu    sync.Mutex
	wmu    sync.Mutex
	closed sync.Once
}

func (c *tlsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if n, err := c.t.take(p); n > 0 || err != nil {
			return n, err
		}
		n, err := c.Conn.Read(c.t.inSpace())
		c.t.filled(n)
		if err != nil {
			if m, terr := c.t.take(p); m > 0 || terr != nil {
				return m, terr
			}
			return 0, err
		}
	}
}

func (c *tlsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeRecords(c.t, c.Conn, p)
}

// Close sends close_notify (unless a write holds the connection) and
// closes it.
func (c *tlsConn) Close() error {
	c.closed.Do(func() {
		if c.wmu.TryLock() {
			// A read under way owns the reading side's state: then the
			// last record is a close_notify.
			if c.rmu.TryLock() {
				c.t.sealClose()
				c.rmu.Unlock()
			} else {
				c.t.sealLast(false)
			}
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			writeRecords(c.t, c.Conn, nil)
			c.wmu.Unlock()
		}
	})
	return c.Conn.Close()
}

// fdWriter writes to a non-blocking socket.
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) { return rawWrite(int(w), p) }
