package edge

import (
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// hpackEncoder is a connection's HPACK encoder (RFC 7541) for the heads
// the edge sends. x/net's encoder takes each field as two strings — a
// native stream's fields are bytes in the node-proxy's response, so each
// value was copied into a string — and looks each up in up to four
// maps. This one looks a field up once, by its name and value as bytes,
// and makes a string only for what it adds to the table.
//
// Its rules are x/net's: a field in the static or the dynamic table is
// sent as its index; any other is added to the dynamic table if it fits
// (with its name's static index when there is one), unless it is
// sensitive (a never-indexed literal); strings are Huffman-coded when
// that is shorter; the table is at most 4,096 bytes or the client's
// SETTINGS_HEADER_TABLE_SIZE, and a smaller one is announced at the
// start of the next block.
type hpackEncoder struct {
	buf []byte // the block being encoded
	key []byte // the field at hand: name, 0, value (no value has a NUL: the callers drop control characters)

	ents    []hpackEntry // the dynamic table, oldest first from head
	head    int
	size    uint32            // of the entries, as RFC 7541 4.1 counts it
	max     uint32            // the table's size
	limit   uint32            // the most the client's decoder allows
	update  bool              // a smaller max is owed to the decoder
	ins     uint64            // entries inserted so far (the newest is number ins)
	byField map[string]uint64 // an entry's key → its number
}

type hpackEntry struct {
	key  string
	size uint32
}

const hpackDefaultTable = 4096

func (e *hpackEncoder) init() {
	e.max, e.limit = hpackDefaultTable, hpackDefaultTable
	e.byField = map[string]uint64{}
}

// begin starts a block.
func (e *hpackEncoder) begin() { e.buf = e.buf[:0] }

// setLimit takes the client's SETTINGS_HEADER_TABLE_SIZE.
func (e *hpackEncoder) setLimit(v uint32) {
	e.limit = v
	if e.max > v {
		e.max = v
		e.evict(0)
		e.update = true
	}
}

// field adds name (in lower case) and value to the block.
func (e *hpackEncoder) field(name, value string, sensitive bool) {
	e.key = append(e.key[:0], name...)
	e.encode(len(name), value, sensitive)
}

// lowerName begins a field with name, in lower case, and returns it so
// (valid until the next field) for the caller's checks; value adds it.
func (e *hpackEncoder) lowerName(name []byte) []byte {
	k := e.key[:0]
	for _, c := range name {
		k = append(k, lowerASCII(c))
	}
	e.key = k
	return k
}

// value ends the field lowerName began and adds it to the block.
func (e *hpackEncoder) value(v []byte, sensitive bool) {
	e.encode(len(e.key), unsafe.String(unsafe.SliceData(v), len(v)), sensitive)
}

// encode adds the field whose name is e.key's first n bytes and whose
// value is v (read here only: copied into the key).
func (e *hpackEncoder) encode(n int, v string, sensitive bool) {
	k := append(e.key[:n], 0)
	e.key = append(k, v...)
	if e.update {
		e.buf = appendHpackInt(e.buf, 0x20, 5, uint64(e.max))
		e.update = false
	}
	k = e.key
	if !sensitive {
		if id, ok := e.byField[string(k)]; ok {
			e.buf = appendHpackInt(e.buf, 0x80, 7, uint64(len(hpackStatic))+1+e.ins-id)
			return
		}
		if i, ok := hpackStaticField[string(k)]; ok {
			e.buf = appendHpackInt(e.buf, 0x80, 7, uint64(i))
			return
		}
	}
	name, value := k[:n], k[n+1:]
	ni := uint64(hpackStaticName[string(name)])
	size := uint32(len(name)+len(value)) + 32
	switch {
	case sensitive:
		e.buf = appendHpackInt(e.buf, 0x10, 4, ni)
	case size <= e.max:
		e.buf = appendHpackInt(e.buf, 0x40, 6, ni)
		e.insert(string(k), size)
	default:
		e.buf = appendHpackInt(e.buf, 0x00, 4, ni)
	}
	if ni == 0 {
		e.buf = appendHpackString(e.buf, name)
	}
	e.buf = appendHpackString(e.buf, value)
}

// insert adds an entry of size bytes, evicting the oldest to make room.
func (e *hpackEncoder) insert(key string, size uint32) {
	e.evict(size)
	e.ents = append(e.ents, hpackEntry{key: key, size: size})
	e.ins++
	e.byField[key] = e.ins
	e.size += size
}

// evict drops the oldest entries until room more bytes fit.
func (e *hpackEncoder) evict(room uint32) {
	for e.head < len(e.ents) && e.size+room > e.max {
		old := e.ents[e.head]
		delete(e.byField, old.key)
		e.ents[e.head] = hpackEntry{}
		e.head++
		e.size -= old.size
	}
	if e.head > 32 && 2*e.head > len(e.ents) {
		n := copy(e.ents, e.ents[e.head:])
		clear(e.ents[n:])
		e.ents, e.head = e.ents[:n], 0
	}
}

// appendHpackInt appends v with an n-bit prefix after the bits of first
// (RFC 7541 5.1).
func appendHpackInt(dst []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(dst, first|byte(v))
	}
	dst = append(dst, first|byte(max))
	for v -= max; v >= 0x80; v >>= 7 {
		dst = append(dst, byte(v)|0x80)
	}
	return append(dst, byte(v))
}

// appendHpackString appends a string literal, Huffman-coded if that is
// shorter (RFC 7541 5.2).
func appendHpackString(dst, b []byte) []byte {
	s := unsafe.String(unsafe.SliceData(b), len(b)) // read here only
	if h := hpack.HuffmanEncodeLength(s); h < uint64(len(s)) {
		dst = appendHpackInt(dst, 0x80, 7, h)
		return hpack.AppendHuffmanString(dst, s)
	}
	dst = appendHpackInt(dst, 0, 7, uint64(len(s)))
	return append(dst, s...)
}

// hpackStatic is RFC 7541's static table (Appendix A); index i+1.
var hpackStatic = [...][2]string{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"},
	{":path", "/index.html"}, {":scheme", "http"}, {":scheme", "https"}, {":status", "200"},
	{":status", "204"}, {":status", "206"}, {":status", "304"}, {":status", "400"},
	{":status", "404"}, {":status", "500"}, {"accept-charset", ""}, {"accept-encoding", "gzip, deflate"},
	{"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""}, {"access-control-allow-origin", ""},
	{"age", ""}, {"allow", ""}, {"authorization", ""}, {"cache-control", ""},
	{"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
	{"content-location", ""}, {"content-range", ""}, {"content-type", ""}, {"cookie", ""},
	{"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""},
	{"from", ""}, {"host", ""}, {"if-match", ""}, {"if-modified-since", ""},
	{"if-none-match", ""}, {"if-range", ""}, {"if-unmodified-since", ""}, {"last-modified", ""},
	{"link", ""}, {"location", ""}, {"max-forwards", ""}, {"proxy-authenticate", ""},
	{"proxy-authorization", ""}, {"range", ""}, {"referer", ""}, {"refresh", ""},
	{"retry-after", ""}, {"server", ""}, {"set-cookie", ""}, {"strict-transport-security", ""},
	{"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""},
	{"www-authenticate", ""},
}

// hpackStaticField finds a static entry by its key (name, 0, value) and
// hpackStaticName by its name (the first entry with it).
var hpackStaticField, hpackStaticName = func() (map[string]uint8, map[string]uint8) {
	fields, names := map[string]uint8{}, map[string]uint8{}
	for i, f := range hpackStatic {
		fields[f[0]+"\x00"+f[1]] = uint8(i + 1)
		if names[f[0]] == 0 {
			names[f[0]] = uint8(i + 1)
		}
	}
	return fields, names
}()

// lowerASCII is c in lower case, if it is an ASCII letter.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
