package edge

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"testing"
)

// FuzzFastRequestParse: whatever the fast path accepts, net/http reads
// the same way (method, target, Host, body length, every forwarded
// field), so the fast path never forwards a request the stdlib path
// would have refused or read differently.
func FuzzFastRequestParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: shop.zeitwork.app\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a.b:80\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: a\r\nTe: trailers\r\nX-Request-Id: abcdefgh\r\nX-A:  b \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\nx",
		"GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n",
		"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nx-real-ip: 1\r\nTrue-Client-IP: 2\r\nX-Forwarded-SSL: on\r\nCF-Connecting-IP: 3\r\nX-Real-IPs: 4\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var q request
		if q.parse(data) != parseOK {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("fast path accepts %q, net/http refuses it: %v", data, err)
		}
		if r.Method != string(q.method) || r.RequestURI != string(q.target) || r.Host != string(q.host) {
			t.Fatalf("%q: net/http reads %s %s host %q", data, r.Method, r.RequestURI, r.Host)
		}
		if r.ContentLength != q.contentLength && !(r.ContentLength == -1 && !q.hasLength) {
			t.Fatalf("%q: length %d vs %d", data, r.ContentLength, q.contentLength)
		}
		if len(r.TransferEncoding) > 0 {
			t.Fatalf("%q: net/http sees a transfer encoding", data)
		}
		for i := range q.n {
			f := q.fields[i]
			// The fast path strips exactly what the stdlib path does from
			// untrusted peers.
			if want := slices.Contains(spoofable, http.CanonicalHeaderKey(string(f.name))); f.spoofable != want {
				t.Fatalf("%q: field %q spoofable = %v, want %v", data, f.name, f.spoofable, want)
			}
			if f.drop {
				continue
			}
			found := false
			for _, v := range r.Header.Values(string(f.name)) {
				found = found || v == string(f.value)
			}
			if !found {
				t.Fatalf("%q: field %q: %q not in net/http's %q", data, f.name, f.value, r.Header.Values(string(f.name)))
			}
		}
	})
}

// FuzzChunkScanner: where the scanner says a chunked body ends, net/http's
// chunked reader reads that body to its end without an error.
func FuzzChunkScanner(f *testing.F) {
	for _, s := range []string{"0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "3;ext=1\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n", "a\r\n0123456789\r\n0\r\n\r\nnext"} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		var s chunkScanner
		n := 0
		if split > 0 && split < len(data) {
			m, err := s.scan(data[:split])
			if err != nil {
				return
			}
			n = m
		}
		m, err := s.scan(data[n:])
		if err != nil || s.state != chunkDone {
			return
		}
		n += m
		body := bufio.NewReader(bytes.NewReader(data[:n]))
		if _, err := io.Copy(io.Discard, httputil.NewChunkedReader(body)); err != nil {
			t.Fatalf("%q ends at %d for the scanner; net/http: %v", data, n, err)
		}
		// What follows the last chunk is the trailer section, ended by an
		// empty line: nothing of the body may be left.
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				t.Fatalf("%q: trailer section does not end at %d", data, n)
			}
			if line == "\r\n" || line == "\n" {
				break
			}
		}
		if body.Buffered() != 0 {
			t.Fatalf("%q: %d bytes after the body", data, body.Buffered())
		}
	})
}

// FuzzChunkStrip: strip, which takes a chunked body's framing out for
// HTTP/2 (h2_native.go), ends where scan ends, leaves exactly the data
// net/http's chunked reader reads, and keeps the trailer section whole.
func FuzzChunkStrip(f *testing.F) {
	for _, s := range []string{"0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "3;ext=1\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n", "a\r\n0123456789\r\n0\r\n\r\nnext"} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		var scan, strip chunkScanner
		buf := bytes.Clone(data)
		var got []byte
		n := 0
		for _, end := range []int{split, len(data)} {
			if end <= n || end > len(data) {
				continue
			}
			m, err := scan.scan(data[n:end])
			p := buf[n:end]
			m2, k, err2 := strip.strip(p)
			if m != m2 || (err == nil) != (err2 == nil) {
				t.Fatalf("%q: scan took %d (%v), strip %d (%v)", data, m, err, m2, err2)
			}
			if err != nil {
				return
			}
			got = append(got, p[:k]...)
			n += m
			if scan.state == chunkDone {
				break
			}
		}
		if scan.state != chunkDone || strip.state != chunkDone {
			return
		}
		want, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(bytes.NewReader(data[:n]))))
		if err != nil {
			t.Fatalf("%q: net/http: %v", data, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: stripped %q, net/http read %q", data, got, want)
		}
		if !bytes.HasSuffix(data[:n], strip.trailer) || !bytes.HasSuffix(strip.trailer, []byte("\r\n")) {
			t.Fatalf("%q: trailer section %q", data, strip.trailer)
		}
	})
}
