package edge

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// tlsPair is a crypto/tls client and, on the server side, the record
// layer the tap made of the handshake (the server's end as the event
// loops would have it, as a blocking tlsConn).
type tlsPair struct {
	client    *tls.Conn
	clientRaw net.Conn // under client: bytes written here bypass its record layer
	server    *tlsConn
	state     *tls.ConnectionState
}

// handshakeTLS connects a crypto/tls client (cfg) to a server (srvCfg,
// from tapConfig) on a tap; early is what the client writes right after
// its handshake, so that it may travel with its Finished.
func handshakeTLS(t *testing.T, srvCfg, cfg *tls.Config, early string) *tlsPair {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clientRaw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clientRaw.Close() })
	serverRaw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serverRaw.Close() })
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
	}
	client := tls.Client(clientRaw, cfg)
	done := make(chan error, 1)
	go func() {
		err := client.Handshake()
		if err == nil && early != "" {
			_, err = io.WriteString(client, early)
		}
		done <- err
	}()
	tap := newTLSTap(serverRaw)
	sc := tls.Server(tap, srvCfg)
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := sc.Handshake(); err != nil {
		t.Fatal(err)
	}
	sc.SetDeadline(time.Time{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := sc.ConnectionState()
	rec, err := tap.records(&st)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsPair{client: client, clientRaw: clientRaw, server: &tlsConn{Conn: serverRaw, t: rec}, state: &st}
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if c, ok := r.(net.Conn); ok {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

// TestTLSRecordsSpeakWithCryptoTLS: after crypto/tls's handshake, the
// edge's record layer carries data both ways with crypto/tls's client —
// what came with the client's Finished, records larger than one, key
// updates each side asked for, a resumed session — and ends as TLS
// says: close_notify is io.EOF, a forged record is refused with an alert
// the client reads.
func TestTLSRecordsSpeakWithCryptoTLS(t *testing.T) {
	cfg := testTLS(t).client.Clone()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	srvCfg := testTLS(t).server.Clone()
	srvCfg.NextProtos = []string{"http/1.1"}
	srvCfg = tapConfig(srvCfg)
	p := handshakeTLS(t, srvCfg, cfg, "GET / HTTP/1.1\r\n\r\n")
	if p.state.Version != tls.VersionTLS13 || p.state.DidResume {
		t.Fatalf("version %x, resumed %v", p.state.Version, p.state.DidResume)
	}
	// crypto/tls sent a session ticket under the application key: the
	// edge's records carry on after it.
	if p.server.t.out.seq != 1 {
		t.Fatalf("server sequence %d after the handshake, want 1 (the ticket)", p.server.t.out.seq)
	}
	if got := readN(t, p.server, 18); got != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("server read %q", got)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 10_000) // 160 kB: many records
	go p.server.Write(big)
	if got := readN(t, p.client, len(big)); got != string(big) {
		t.Fatal("client read a different 160 kB")
	}
	go p.client.Write(big)
	if got := readN(t, p.server, len(big)); got != string(big) {
		t.Fatal("server read a different 160 kB")
	}

	// The edge asks for a key update: the client moves its reading key,
	// and answers with a KeyUpdate of its own, after which its records
	// use a new key the edge must follow.
	p.server.wmu.Lock()
	if !p.server.t.requestKeyUpdate() {
		t.Fatal("KeyUpdate not sealed")
	}
	p.server.wmu.Unlock()
	if _, err := p.server.Write([]byte("after update")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, p.client, 12); got != "after update" {
		t.Fatalf("client read %q", got)
	}
	before := string(p.server.t.in.secret)
	if _, err := io.WriteString(p.client, "pong"); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, p.server, 4); got != "pong" {
		t.Fatalf("server read %q", got)
	}
	if string(p.server.t.in.secret) == before {
		t.Fatal("the client's KeyUpdate did not move the edge's reading key")
	}

	// close_notify ends the reading side; the edge answers with its own.
	p.client.Close()
	p.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := p.server.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("after close_notify: %d, %v", n, err)
	}

	// A resumed session (PSK): its ticket and keys come out right too.
	q := handshakeTLS(t, srvCfg, cfg, "")
	if !q.state.DidResume {
		t.Fatal("second connection did not resume")
	}
	if _, err := q.server.Write([]byte("resumed")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, q.client, 7); got != "resumed" {
		t.Fatalf("client read %q", got)
	}

	// A record the client's keys did not seal: the edge refuses it and
	// tells the client why, under the right key and sequence number.
	forged := append([]byte{23, 3, 3, 0, 40}, make([]byte, 40)...)
	rand.Read(forged[5:])
	q.clientRaw.Write(forged)
	q.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.server.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "authenticate") {
		t.Fatalf("forged record: %v", err)
	}
	q.server.Close()
	q.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.client.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("client after the forged record: %v", err)
	}
}

// mirror is the client's side of t's keys: what seals for t, and opens
// what t sealed.
func mirror(t *testing.T, suite uint16, r *tlsRecords) *tlsRecords {
	m, err := newTLSRecords(suite, r.out.secret, r.in.secret)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pipe moves what from has sealed into to's reading side.
func pipe(from, to *tlsRecords) {
	for q := from.queued(); len(q) > 0; q = from.queued() {
		n := copy(to.inSpace(), q)
		to.filled(n)
		from.wrote(n)
	}
}

// takeAll takes what t has opened until it needs more.
func takeAll(t *testing.T, r *tlsRecords) string {
	var out []byte
	buf := make([]byte, 1000)
	for {
		n, err := r.take(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return string(out)
		}
		out = append(out, buf[:n]...)
	}
}

// TestTLSRecordsEverySuiteAndKeyUpdate: each of TLS 1.3's suites seals
// and opens records of every size, and a client's request for a key
// update is answered with a KeyUpdate before the edge's next record.
func TestTLSRecordsEverySuiteAndKeyUpdate(t *testing.T) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		cs, ss := make([]byte, tlsSuites[suite].hash().Size()), make([]byte, tlsSuites[suite].hash().Size())
		rand.Read(cs)
		rand.Read(ss)
		edge, err := newTLSRecords(suite, cs, ss)
		if err != nil {
			t.Fatal(err)
		}
		client := mirror(t, suite, edge)
		for _, size := range []int{0, 1, 100, maxPlaintext - 1, maxPlaintext, maxPlaintext + 1, 3*maxPlaintext + 7} {
			msg := bytes.Repeat([]byte{'x'}, size)
			var got string
			for n := 0; n < size; {
				n += edge.seal(msg[n:])
				pipe(edge, client)
				got += takeAll(t, client)
			}
			if got != string(msg) {
				t.Fatalf("%#x: %d bytes sealed, %d opened", suite, size, len(got))
			}
		}
		// The client asks for an update and sends under its new key.
		if !client.requestKeyUpdate() {
			t.Fatal("KeyUpdate not sealed")
		}
		client.seal([]byte("hello"))
		pipe(client, edge)
		if got := takeAll(t, edge); got != "hello" {
			t.Fatalf("%#x: edge read %q after the client's KeyUpdate", suite, got)
		}
		if !edge.keyUpdateOwed.Load() {
			t.Fatalf("%#x: the edge owes no KeyUpdate", suite)
		}
		old := edge.out.secret
		edge.seal([]byte("world"))
		pipe(edge, client)
		if got := takeAll(t, client); got != "world" || bytes.Equal(old, edge.out.secret) || edge.keyUpdateOwed.Load() {
			t.Fatalf("%#x: client read %q; the edge's key moved: %v", suite, got, !bytes.Equal(old, edge.out.secret))
		}
	}
}

// TestTLSRecordsRefuseWhatTLS13Forbids: after the handshake a client may
// send encrypted application data, KeyUpdate and alerts, nothing else;
// each violation ends the reading side with the alert RFC 8446 names.
func TestTLSRecordsRefuseWhatTLS13Forbids(t *testing.T) {
	suite := uint16(tls.TLS_AES_128_GCM_SHA256)
	secret := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name  string
		send  func(c *tlsRecords) []byte
		alert byte
	}{
		{"plaintext alert", func(*tlsRecords) []byte { return []byte{21, 3, 3, 0, 2, 1, 0} }, alertUnexpectedMessage},
		{"change_cipher_spec", func(*tlsRecords) []byte { return []byte{20, 3, 3, 0, 1, 1} }, alertUnexpectedMessage},
		{"oversized record", func(*tlsRecords) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, alertRecordOverflow},
		{"short record", func(*tlsRecords) []byte { return []byte{23, 3, 3, 0, 3, 1, 2, 3} }, alertBadRecordMAC},
		{"handshake message", func(c *tlsRecords) []byte {
			c.wbuf = tlsBufPool.Get().(*[]byte)
			c.sealRecord(recordHandshake, []byte{4, 0, 0, 1, 0}) // NewSessionTicket, from a client
			return c.queued()
		}, alertUnexpectedMessage},
		{"bad KeyUpdate", func(c *tlsRecords) []byte {
			c.wbuf = tlsBufPool.Get().(*[]byte)
			c.sealRecord(recordHandshake, []byte{msgKeyUpdate, 0, 0, 1, 2})
			return c.queued()
		}, alertIllegalParameter},
		{"only padding", func(c *tlsRecords) []byte {
			c.wbuf = tlsBufPool.Get().(*[]byte)
			c.sealRecord(0, nil) // content type 0: all zeros
			return c.queued()
		}, alertUnexpectedMessage},
	} {
		edge, err := newTLSRecords(suite, secret, secret)
		if err != nil {
			t.Fatal(err)
		}
		client := mirror(t, suite, edge)
		b := tc.send(client)
		edge.filled(copy(edge.inSpace(), b))
		if n, err := edge.take(make([]byte, 100)); err == nil || n != 0 {
			t.Fatalf("%s: took %d, %v", tc.name, n, err)
		}
		if edge.alert != tc.alert {
			t.Fatalf("%s: alert %d, want %d", tc.name, edge.alert, tc.alert)
		}
		// The alert goes out sealed, and nothing after it.
		edge.sealClose()
		pipe(edge, client)
		if _, err := client.take(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "alert") {
			t.Fatalf("%s: client saw %v", tc.name, err)
		}
		if edge.seal([]byte("more")) != 0 {
			t.Fatalf("%s: sealed after the closing alert", tc.name)
		}
	}
}

// FuzzTLSRecords: whatever a client sends after the handshake, the record
// layer neither panics nor hands out bytes that were not sealed with the
// client's key.
func FuzzTLSRecords(f *testing.F) {
	suite := uint16(tls.TLS_AES_128_GCM_SHA256)
	secret := bytes.Repeat([]byte{9}, 32)
	seed, _ := newTLSRecords(suite, secret, secret)
	seed.seal([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(append([]byte(nil), seed.queued()...))
	f.Add([]byte{23, 3, 3, 0, 0})
	f.Add([]byte{23, 3, 3, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		edge, _ := newTLSRecords(suite, secret, secret)
		var got []byte
		buf := make([]byte, 512)
		for len(b) > 0 {
			n := copy(edge.inSpace(), b)
			edge.filled(n)
			b = b[n:]
			for {
				m, err := edge.take(buf)
				got = append(got, buf[:m]...)
				if m == 0 || err != nil {
					break
				}
			}
			if edge.err != nil {
				break
			}
		}
		if len(got) > 0 && !bytes.HasPrefix([]byte("GET / HTTP/1.1\r\n\r\n"), got) {
			t.Fatalf("opened %q from forged records", got)
		}
		edge.release()
	})
}
