package edge

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The framer can decode header blocks itself (ReadMetaHeaders), but it
// makes a new MetaHeadersFrame, a new fields slice grown field by field
// and a new closure for every HEADERS frame: a third of a native
// stream's allocations and a tenth of its CPU. headerBlock decodes them
// into one frame and one slice that the connection reuses, with the same
// rules (RFC 9113 8.2 and 8.3, and the framer's limits on size).

// headerBlock is a connection's decoder of header blocks. Its frame is
// valid until the next HEADERS: what handles it copies what it keeps.
type headerBlock struct {
	dec *hpack.Decoder
	mh  http2.MetaHeadersFrame

	// Of the block being decoded.
	sawRegular    bool
	invalid       error  // a field no request may have: a stream error
	remain        uint32 // of the header list's size, trailer fields apart
	trailerRemain uint32
}

var (
	errPseudoAfterRegular = errors.New("pseudo-header field after a regular one")
	errFieldName          = errors.New("invalid header field name")
	errFieldValue         = errors.New("invalid header field value")
	errPseudo             = errors.New("invalid pseudo-header fields")
)

func (b *headerBlock) init() {
	b.dec = hpack.NewDecoder(4096, nil)
	b.dec.SetMaxStringLength(h2MaxHeaderList)
	b.dec.SetEmitFunc(b.emit) // once: the method value is not made per block
}

// readFrame is the framer's next frame, a HEADERS frame with its
// CONTINUATION frames read and its block decoded into a MetaHeadersFrame.
func (sc *h2Conn) readFrame() (http2.Frame, error) {
	f, err := sc.fr.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		return sc.hb.read(sc.fr, hf)
	}
	return f, err
}

// read decodes the block hf begins, reading its CONTINUATION frames from
// fr (the framer makes sure that nothing else comes between them).
func (b *headerBlock) read(fr *http2.Framer, hf *http2.HeadersFrame) (http2.Frame, error) {
	b.mh.HeadersFrame = hf
	clear(b.mh.Fields) // the strings of the last block
	b.mh.Fields = b.mh.Fields[:0]
	b.mh.Truncated = false
	b.sawRegular, b.invalid = false, nil
	b.remain, b.trailerRemain = h2MaxHeaderList, h2MaxHeaderList
	b.dec.SetEmitEnabled(true)
	frag, end := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// A block far over the limit, or going on after a field we
		// refuse, is not decoded further: the connection ends (as the
		// framer does, to bound the work a client can make us do).
		if int64(len(frag)) > 2*int64(b.remain+b.trailerRemain) || b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := b.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if end {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the framer's frame order says so
		frag, end = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid == nil && !pseudosValid(b.mh.PseudoFields()) {
		b.invalid = errPseudo
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	return &b.mh, nil
}

// emit takes one decoded field.
func (b *headerBlock) emit(f hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		b.invalid = errFieldValue
	}
	if strings.HasPrefix(f.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !wireFieldName(f.Name) {
			b.invalid = errFieldName
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false) // the rest is decoded for the table only
		return
	}
	remain, size := &b.remain, f.Size()
	if f.Name == "trailer" {
		// Counted apart, by the fields it names, as the framer does.
		n := uint32(strings.Count(f.Value, ",") + 1)
		remain, size = &b.trailerRemain, uint32(len(f.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		b.dec.SetEmitEnabled(false)
		b.mh.Truncated = true
		b.remain, b.trailerRemain = 0, 0
		return
	}
	*remain -= size
	b.mh.Fields = append(b.mh.Fields, f)
}

// wireFieldName says whether name is a token in lower case (RFC 9113
// 8.2.1: upper case makes a request malformed).
func wireFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// pseudosValid says whether the pseudo-header fields are known ones,
// each once, and not a request's and a response's mixed.
func pseudosValid(pf []hpack.HeaderField) bool {
	var request, response bool
	for i, f := range pf {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return false
		}
		for _, g := range pf[:i] {
			if g.Name == f.Name {
				return false
			}
		}
	}
	return !(request && response)
}
