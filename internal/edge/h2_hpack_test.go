package edge

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func TestHpackStaticTableIsRFC7541s(t *testing.T) {
	for i, want := range hpackStatic {
		var got []hpack.HeaderField
		d := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
		if _, err := d.Write([]byte{0x80 | byte(i+1)}); err != nil {
			t.Fatalf("index %d: %v", i+1, err)
		}
		if len(got) != 1 || got[0].Name != want[0] || got[0].Value != want[1] {
			t.Fatalf("index %d: ours %q, x/net's %v", i+1, want, got)
		}
	}
}

// hpackPeer is the client's side: x/net's decoder, fed every block.
type hpackPeer struct {
	t   *testing.T
	dec *hpack.Decoder
	got []hpack.HeaderField
}

func newHpackPeer(t *testing.T) *hpackPeer {
	p := &hpackPeer{t: t}
	p.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { p.got = append(p.got, f) })
	return p
}

// block encodes fields (name, value, name, value…; a name starting with
// "!" is sensitive) and checks that the peer decodes them as they were;
// it returns the block's size.
func (p *hpackPeer) block(e *hpackEncoder, fields ...string) int {
	p.t.Helper()
	e.begin()
	var want []hpack.HeaderField
	for i := 0; i+1 < len(fields); i += 2 {
		name, sensitive := strings.CutPrefix(fields[i], "!")
		e.field(name, fields[i+1], sensitive)
		want = append(want, hpack.HeaderField{Name: name, Value: fields[i+1], Sensitive: sensitive})
	}
	p.got = p.got[:0]
	if _, err := p.dec.Write(e.buf); err != nil {
		p.t.Fatalf("the client cannot decode the block: %v", err)
	}
	if err := p.dec.Close(); err != nil {
		p.t.Fatalf("the block ends mid-field: %v", err)
	}
	if fmt.Sprint(p.got) != fmt.Sprint(want) {
		p.t.Fatalf("the client decoded\n%v\nnot\n%v", p.got, want)
	}
	return len(e.buf)
}

func TestHpackEncoderIsDecodedAsSent(t *testing.T) {
	var e hpackEncoder
	e.init()
	p := newHpackPeer(t)
	head := []string{":status", "200", "content-type", "text/html; charset=utf-8", "server", "app",
		"cache-control", "no-store", "x-custom", "a value", "!x-request-id", "r1", "date", "Fri, 04 Dec 2026 22:00:00 GMT"}
	first := p.block(&e, head...)
	// Again: every field but the sensitive one is an index now.
	head[11] = "r2"
	again := p.block(&e, head...)
	if again >= first/3 {
		t.Fatalf("a repeated head took %d bytes after %d: the table is not used", again, first)
	}
	// Static entries, an empty value, a field larger than the table.
	p.block(&e, ":status", "404", "accept-encoding", "gzip, deflate", "age", "", "big", strings.Repeat("x", 5000))
	// Enough new fields to evict many times over (and compact the table).
	for i := range 300 {
		p.block(&e, fmt.Sprintf("x-n%d", i%7), strings.Repeat("v", i%90), "etag", fmt.Sprint(i), "content-type", "text/plain")
	}
	p.block(&e, head...)
}

func TestHpackEncoderFollowsTheClientsTableSize(t *testing.T) {
	var e hpackEncoder
	e.init()
	p := newHpackPeer(t)
	p.block(&e, "a", "1", "b", "2")
	// The client allows 40 bytes: the encoder says so in its next block,
	// and keeps to it (one entry of "a: 1" is 34 bytes).
	p.dec.SetAllowedMaxDynamicTableSize(40)
	e.setLimit(40)
	p.block(&e, "a", "1", "b", "2", "a", "1")
	if e.size > 40 || e.max != 40 {
		t.Fatalf("table of %d bytes, max %d, after a limit of 40", e.size, e.max)
	}
	// A larger limit does not grow the table (x/net's encoder neither).
	e.setLimit(1 << 20)
	p.block(&e, "c", "3", "d", "4", "c", "3")
	// No table at all.
	p.dec.SetAllowedMaxDynamicTableSize(0)
	e.setLimit(0)
	p.block(&e, "a", "1", "a", "1")
	if len(e.byField) != 0 || e.size != 0 {
		t.Fatalf("%d entries (%d bytes) with a table size of 0", len(e.byField), e.size)
	}
}

// FuzzHpackEncoder: whatever the fields and table sizes, the client's
// decoder reads back what was encoded.
func FuzzHpackEncoder(f *testing.F) {
	f.Add([]byte("content-type\x00text/html\x01server\x00x\x02\x40\x03a\x00b"), uint16(4096))
	f.Add([]byte("a\x00\x00b\x00c\x01a\x00\x00"), uint16(0))
	f.Fuzz(func(t *testing.T, ops []byte, limit uint16) {
		var e hpackEncoder
		e.init()
		p := newHpackPeer(t)
		if limit < hpackDefaultTable {
			p.dec.SetAllowedMaxDynamicTableSize(uint32(limit))
			e.setLimit(uint32(limit))
		}
		// Blocks are split at \x01; in each, fields "name\x00value"
		// are split at \x02 (\x03 starts a sensitive one).
		for _, blk := range strings.Split(string(ops), "\x01") {
			var fields []string
			for _, fld := range strings.Split(blk, "\x02") {
				name, value, ok := strings.Cut(fld, "\x00")
				sensitive := strings.HasPrefix(name, "\x03")
				name = strings.ToLower(strings.TrimPrefix(name, "\x03"))
				if !ok || !wireFieldName(name) && !strings.HasPrefix(name, ":") || strings.ContainsAny(value, "\x00\r\n") {
					continue
				}
				if sensitive {
					name = "!" + name
				}
				fields = append(fields, name, value)
			}
			p.block(&e, fields...)
		}
	})
}
