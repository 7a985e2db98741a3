package edge

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// TLS 1.3's record layer (RFC 8446, section 5), for HTTPS on the event
// loops.
//
// crypto/tls needs a blocking net.Conn, which a loop's connection is not.
// So crypto/tls runs the handshake on a goroutine, as it always has, and
// then a loop takes the socket over with the handshake's traffic secrets
// (tls_tap.go says how they are had) and seals and opens the records
// itself. What is here is the part of TLS 1.3 that follows a server's
// handshake: application data, KeyUpdate both ways, and alerts. Anything
// else a client sends then is an error that ends the connection, as it
// does in crypto/tls. TLS 1.2 connections stay with crypto/tls.

const (
	recordHeader    = 5
	maxPlaintext    = 1 << 14
	maxCiphertext   = maxPlaintext + 256 // what a peer may send (RFC 8446, 5.2)
	aeadOverhead    = 16                 // the tag, of every TLS 1.3 AEAD
	tlsRecordBuf    = recordHeader + maxCiphertext
	recordAppData   = 23
	recordAlert     = 21
	recordHandshake = 22
	msgKeyUpdate    = 24

	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertIllegalParameter  = 47
)

// tlsSuite is one of TLS 1.3's cipher suites.
type tlsSuite struct {
	keyLen int
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
}

func aesGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var tlsSuites = map[uint16]*tlsSuite{
	tls.TLS_AES_128_GCM_SHA256:       {keyLen: 16, hash: sha256.New, aead: aesGCM},
	tls.TLS_AES_256_GCM_SHA384:       {keyLen: 32, hash: sha512.New384, aead: aesGCM},
	tls.TLS_CHACHA20_POLY1305_SHA256: {keyLen: chacha20poly1305.KeySize, hash: sha256.New, aead: chacha20poly1305.New},
}

// expandLabel is HKDF-Expand-Label with an empty context (RFC 8446, 7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = append(info, byte(n>>8), byte(n), byte(len(full)))
	info = append(info, full...)
	info = append(info, 0)
	return hkdf.Expand(h, secret, string(info), n)
}

// trafficKeys are one direction's keys, from its traffic secret.
type trafficKeys struct {
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	secret []byte
	n      [12]byte // the nonce's room: a local one escapes to the heap through the AEAD's interface
}

func (k *trafficKeys) set(s *tlsSuite, secret []byte) error {
	key, err := expandLabel(s.hash, secret, "key", s.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(s.hash, secret, "iv", len(k.iv))
	if err != nil {
		return err
	}
	aead, err := s.aead(key)
	if err != nil {
		return err
	}
	k.aead, k.secret, k.seq = aead, secret, 0
	copy(k.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (KeyUpdate, RFC 8446, 7.2).
func (k *trafficKeys) update(s *tlsSuite) error {
	next, err := expandLabel(s.hash, k.secret, "traffic upd", s.hash().Size())
	if err != nil {
		return err
	}
	return k.set(s, next)
}

// nonce is the per-record nonce: the IV XORed with the sequence number.
func (k *trafficKeys) nonce() []byte {
	k.n = k.iv
	for i := range 8 {
		k.n[4+i] ^= byte(k.seq >> (56 - 8*i))
	}
	return k.n[:]
}

// The records' buffers come from a pool and go back to it whenever a
// connection holds nothing in them: an idle keep-alive connection keeps
// none.
var tlsBufPool = sync.Pool{New: func() any { b := make([]byte, tlsRecordBuf); return &b }}

// tlsRecords is a TLS 1.3 connection's record layer after the handshake.
// Reading and writing are independent (a goroutine each may use them);
// the only thing they share is keyUpdateOwed.
type tlsRecords struct {
	suite *tlsSuite

	// Reading: in opens the client's records.
	in    trafficKeys
	rbuf  *[]byte // ciphertext read; rbuf[rr:rw] not yet opened
	rr    int
	rw    int
	plain []byte // application data opened and not yet taken (in rbuf)
	err   error  // the reading side's end: io.EOF after close_notify
	alert byte   // the alert to send for err; 0 with err: close_notify

	// Writing: out seals the edge's records.
	out           trafficKeys
	wbuf          *[]byte // sealed records; wbuf[wr:ww] not yet written
	wr            int
	ww            int
	keyUpdateOwed atomic.Bool // the client asked for a KeyUpdate: sent before the next record
	closed        bool        // the closing alert is sealed: nothing more
}

func newTLSRecords(suiteID uint16, clientSecret, serverSecret []byte) (*tlsRecords, error) {
	s, ok := tlsSuites[suiteID]
	if !ok {
		return nil, fmt.Errorf("cipher suite %#04x", suiteID)
	}
	t := &tlsRecords{suite: s}
	if err := t.in.set(s, clientSecret); err != nil {
		return nil, err
	}
	if err := t.out.set(s, serverSecret); err != nil {
		return nil, err
	}
	return t, nil
}

// release gives the buffers back; the connection is done with.
func (t *tlsRecords) release() {
	t.plain = nil
	t.releaseIn()
	if t.wbuf != nil {
		tlsBufPool.Put(t.wbuf)
		t.wbuf, t.wr, t.ww = nil, 0, 0
	}
}

func (t *tlsRecords) releaseIn() {
	if t.rbuf != nil {
		tlsBufPool.Put(t.rbuf)
		t.rbuf, t.rr, t.rw = nil, 0, 0
	}
}

// buffered says whether anything read is still to be taken.
func (t *tlsRecords) buffered() bool { return len(t.plain) > 0 || t.rw > t.rr }

// inSpace is where the next ciphertext from the socket goes; filled says
// how much came. Only called when take returned nothing.
func (t *tlsRecords) inSpace() []byte {
	if t.rbuf == nil {
		t.rbuf, t.rr, t.rw = tlsBufPool.Get().(*[]byte), 0, 0
	}
	b := *t.rbuf
	if t.rr > 0 {
		t.rw = copy(b, b[t.rr:t.rw])
		t.rr = 0
	}
	return b[t.rw:]
}

func (t *tlsRecords) filled(n int) {
	t.rw += n
	if t.rw == t.rr && len(t.plain) == 0 {
		t.releaseIn()
	}
}

// take copies application data into p, opening the records that are
// here whole: n > 0, or 0 with a nil error when more ciphertext is
// needed, or the reading side's end (io.EOF after the client's
// close_notify).
func (t *tlsRecords) take(p []byte) (int, error) {
	for {
		if len(t.plain) > 0 {
			n := copy(p, t.plain)
			t.plain = t.plain[n:]
			if len(t.plain) == 0 && t.rr == t.rw {
				t.releaseIn()
			}
			return n, nil
		}
		if t.err != nil {
			return 0, t.err
		}
		ok, err := t.open()
		if err != nil {
			t.err = err
			return 0, err
		}
		if !ok {
			return 0, nil
		}
	}
}

// open opens the next record if it is here whole; false: it is not.
func (t *tlsRecords) open() (bool, error) {
	if t.rw-t.rr < recordHeader {
		return false, nil
	}
	b := (*t.rbuf)[t.rr:t.rw]
	n := int(b[3])<<8 | int(b[4])
	switch {
	case b[0] != recordAppData:
		// Alerts and everything else are encrypted in TLS 1.3: a
		// plaintext record now is the peer's mistake, or an attack.
		return false, t.fail(alertUnexpectedMessage, "tls: plaintext record of type %d after the handshake", b[0])
	case n > maxCiphertext:
		return false, t.fail(alertRecordOverflow, "tls: record of %d bytes", n)
	case len(b) < recordHeader+n:
		return false, nil
	}
	hdr, ct := b[:recordHeader], b[recordHeader:recordHeader+n]
	pt, err := t.in.aead.Open(ct[:0], t.in.nonce(), ct, hdr)
	if err != nil {
		return false, t.fail(alertBadRecordMAC, "tls: record does not authenticate")
	}
	t.in.seq++
	if t.in.seq == 0 {
		return false, t.fail(alertUnexpectedMessage, "tls: sequence number wrapped")
	}
	t.rr += recordHeader + n
	// The content type is the last byte that is not padding.
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return false, t.fail(alertUnexpectedMessage, "tls: record without a content type")
	}
	typ, pt := pt[i], pt[:i]
	if len(pt) > maxPlaintext {
		return false, t.fail(alertRecordOverflow, "tls: record of %d plaintext bytes", len(pt))
	}
	switch typ {
	case recordAppData:
		t.plain = pt
		return true, nil
	case recordAlert:
		if len(pt) == 2 && pt[1] == alertCloseNotify {
			return false, io.EOF
		}
		if len(pt) != 2 {
			return false, t.fail(alertDecodeError, "tls: malformed alert")
		}
		t.alert = 0xff // the client ended it: nothing to answer
		return false, fmt.Errorf("tls: client sent alert %d", pt[1])
	case recordHandshake:
		return true, t.keyUpdate(pt)
	}
	return false, t.fail(alertUnexpectedMessage, "tls: record of content type %d", typ)
}

// keyUpdate takes the one handshake message a client may send after the
// handshake, whole in its record (a message before a key change must
// end with its record).
func (t *tlsRecords) keyUpdate(m []byte) error {
	if len(m) != 5 || m[0] != msgKeyUpdate || m[1] != 0 || m[2] != 0 || m[3] != 1 {
		return t.fail(alertUnexpectedMessage, "tls: unexpected handshake message after the handshake")
	}
	if m[4] > 1 {
		return t.fail(alertIllegalParameter, "tls: malformed KeyUpdate")
	}
	if err := t.in.update(t.suite); err != nil {
		return err
	}
	if m[4] == 1 {
		t.keyUpdateOwed.Store(true)
	}
	return nil
}

func (t *tlsRecords) fail(alert byte, format string, args ...any) error {
	t.alert = alert
	return fmt.Errorf(format, args...)
}

// queued is what is sealed and not yet written; wrote takes in that n
// bytes of it were.
func (t *tlsRecords) queued() []byte {
	if t.wbuf == nil {
		return nil
	}
	return (*t.wbuf)[t.wr:t.ww]
}

func (t *tlsRecords) wrote(n int) {
	t.wr += n
	if t.wr == t.ww {
		tlsBufPool.Put(t.wbuf)
		t.wbuf, t.wr, t.ww = nil, 0, 0
	}
}

// seal seals the start of p, as much as fits, behind what is queued, and
// returns how much of p it took (0: write the queue first).
func (t *tlsRecords) seal(p []byte) int {
	if t.closed {
		return 0
	}
	if t.wbuf == nil {
		t.wbuf, t.wr, t.ww = tlsBufPool.Get().(*[]byte), 0, 0
	}
	if t.keyUpdateOwed.Load() {
		// The answer to the client's KeyUpdate goes under the old key.
		if !t.sealRecord(recordHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0}) {
			return 0
		}
		t.keyUpdateOwed.Store(false)
		if err := t.out.update(t.suite); err != nil {
			t.closed = true // cannot happen with the suites above
			return 0
		}
	}
	room := len(*t.wbuf) - t.ww - recordHeader - 1 - aeadOverhead
	n := min(len(p), room, maxPlaintext)
	if n <= 0 || !t.sealRecord(recordAppData, p[:n]) {
		return 0
	}
	return n
}

// sealRecord appends a record of type typ with p to the queue; false when
// it does not fit.
func (t *tlsRecords) sealRecord(typ byte, p []byte) bool {
	b := *t.wbuf
	size := len(p) + 1 + aeadOverhead
	if t.ww+recordHeader+size > len(b) {
		return false
	}
	hdr := b[t.ww : t.ww+recordHeader]
	hdr[0], hdr[1], hdr[2], hdr[3], hdr[4] = recordAppData, 3, 3, byte(size>>8), byte(size)
	body := b[t.ww+recordHeader : t.ww+recordHeader+len(p)+1]
	copy(body, p)
	body[len(p)] = typ
	t.out.aead.Seal(body[:0], t.out.nonce(), body, hdr)
	t.out.seq++
	t.ww += recordHeader + size
	return true
}

// sealClose queues the connection's last record: the alert for the
// reading side's error, or close_notify. Nothing is sealed after it.
func (t *tlsRecords) sealClose() { t.sealLast(true) }

// sealLast is sealClose; without readState (a read may be under way on
// another goroutine, and the reading side's state is its) it says
// close_notify.
func (t *tlsRecords) sealLast(readState bool) {
	if t.closed {
		return
	}
	level, alert := byte(1), byte(alertCloseNotify)
	if readState {
		if t.alert == 0xff {
			t.closed = true
			return
		}
		if t.err != nil && !errors.Is(t.err, io.EOF) {
			level, alert = 2, t.alert // fatal
		}
	}
	if t.wbuf == nil {
		t.wbuf, t.wr, t.ww = tlsBufPool.Get().(*[]byte), 0, 0
	}
	t.sealRecord(recordAlert, []byte{level, alert})
	t.closed = true
}

// requestKeyUpdate sends a KeyUpdate that asks the client for one back,
// before the next record (tests use it: the edge itself never asks).
func (t *tlsRecords) requestKeyUpdate() bool {
	if t.wbuf == nil {
		t.wbuf, t.wr, t.ww = tlsBufPool.Get().(*[]byte), 0, 0
	}
	if !t.sealRecord(recordHandshake, []byte{msgKeyUpdate, 0, 0, 1, 1}) {
		return false
	}
	return t.out.update(t.suite) == nil
}

// byteWriter is a socket records are written to.
type byteWriter interface {
	Write(p []byte) (int, error)
}

// writeRecords seals p and writes it, with what was queued before, to w
// until it is all written or w fails (a non-blocking socket's EAGAIN
// too): n is how much of p is sealed.
func writeRecords[W byteWriter](t *tlsRecords, w W, p []byte) (n int, err error) {
	for {
		if q := t.queued(); len(q) > 0 {
			m, err := w.Write(q)
			if m > 0 {
				t.wrote(m)
			}
			if err != nil {
				return n, err
			}
			continue
		}
		if n == len(p) {
			return n, nil
		}
		m := t.seal(p[n:])
		if m == 0 && len(t.queued()) == 0 {
			return n, errTLSClosed
		}
		n += m
	}
}

var errTLSClosed = errors.New("tls: connection closed")
