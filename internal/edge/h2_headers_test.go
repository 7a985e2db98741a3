package edge

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hpackBlock encodes fields as one header block, with a table of its
// own: its literals add to the decoder's table and name nothing in it.
func hpackBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// headerFrames spells two header blocks as the frames a client sends:
// the first on stream 1, cut at split into HEADERS and CONTINUATION, the
// second on stream 3.
func headerFrames(first, second []byte, split int) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	if split <= 0 || split >= len(first) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: true})
	} else {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first[:split], EndStream: true})
		fr.WriteContinuation(1, true, first[split:])
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: second, EndHeaders: true})
	return buf.Bytes()
}

// decoded is what a reader made of one frame, to compare.
func decoded(f http2.Frame, err error) string {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("stream error %d %v", se.StreamID, se.Code)
	case errors.As(err, &ce):
		return fmt.Sprintf("connection error %v", http2.ErrCode(ce))
	case err != nil:
		return "error " + err.Error()
	}
	mh, ok := f.(*http2.MetaHeadersFrame)
	if !ok {
		return fmt.Sprintf("frame %T", f)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stream %d end %v truncated %v:", mh.StreamID, mh.StreamEnded(), mh.Truncated)
	for _, hf := range mh.Fields {
		fmt.Fprintf(&b, " %q=%q", hf.Name, hf.Value)
	}
	return b.String()
}

// readBoth reads the frames with the framer's own decoding and with
// headerBlock's, and fails where they differ; it returns ours.
func readBoth(t *testing.T, frames []byte) []string {
	theirs := http2.NewFramer(nil, bytes.NewReader(frames))
	theirs.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	theirs.MaxHeaderListSize = h2MaxHeaderList
	sc := &h2Conn{}
	sc.fr = http2.NewFramer(nil, bytes.NewReader(frames))
	sc.hb.init()
	var got []string
	for {
		want := decoded(theirs.ReadFrame())
		have := decoded(sc.readFrame())
		if want != have {
			t.Fatalf("the framer read %s\nheaderBlock read %s", want, have)
		}
		if strings.Contains(have, "error") {
			return got // the connection ends here (or the input did)
		}
		got = append(got, have)
	}
}

func TestHeaderBlockDecodesAsTheFramer(t *testing.T) {
	long := strings.Repeat("v", h2MaxHeaderList)
	for _, tc := range []struct {
		name          string
		first, second []byte
		want          []string // what the two blocks decode to
	}{
		{"request", hpackBlock(":method", "GET", ":path", "/a", "accept", "*/*"), hpackBlock(":method", "GET"),
			[]string{`stream 1 end true truncated false: ":method"="GET" ":path"="/a" "accept"="*/*"`, `stream 3 end false truncated false: ":method"="GET"`}},
		// The second block has fewer fields: none of the first's remain.
		{"fewer fields next", hpackBlock("a", "1", "b", "2", "c", "3"), hpackBlock("d", "4"),
			[]string{`stream 1 end true truncated false: "a"="1" "b"="2" "c"="3"`, `stream 3 end false truncated false: "d"="4"`}},
		{"upper-case name", hpackBlock(":method", "GET", "X-Up", "1"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"pseudo after regular", hpackBlock("a", "1", ":path", "/"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"request and response pseudo", hpackBlock(":method", "GET", ":status", "200"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"duplicate pseudo", hpackBlock(":path", "/", ":path", "/b"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"unknown pseudo", hpackBlock(":foo", "x"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"value with a newline", hpackBlock("a", "x\ny"), hpackBlock("a", "1"),
			[]string{"stream error 1 PROTOCOL_ERROR"}},
		{"over the list size", hpackBlock(":method", "GET", "big", long), hpackBlock("a", "1"),
			[]string{`stream 1 end true truncated true: ":method"="GET"`, `stream 3 end false truncated false: "a"="1"`}},
		{"not hpack", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, hpackBlock("a", "1"),
			[]string{"connection error COMPRESSION_ERROR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, len(tc.first) / 2} {
				got := readBoth(t, headerFrames(tc.first, tc.second, split))
				if strings.HasPrefix(tc.want[0], "stream error") || strings.HasPrefix(tc.want[0], "connection error") {
					if len(got) != 0 {
						t.Fatalf("split %d: decoded %q, want %s", split, got, tc.want[0])
					}
					continue
				}
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Fatalf("split %d: decoded\n%s\nwant\n%s", split, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
				}
			}
		})
	}
}

// TestHeaderBlockReusesItsFields: the point of decoding ourselves.
func TestHeaderBlockReusesItsFields(t *testing.T) {
	block := hpackBlock(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a.example",
		"accept", "*/*", "user-agent", "t", "accept-encoding", "gzip", "cookie", "a=b")
	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	for id := uint32(1); id < 200; id += 2 {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
	}
	sc := &h2Conn{}
	sc.fr = http2.NewFramer(nil, bytes.NewReader(frames.Bytes()))
	sc.hb.init()
	if _, err := sc.readFrame(); err != nil { // the fields slice grows once
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(50, func() {
		f, err := sc.readFrame()
		if err != nil || len(f.(*http2.MetaHeadersFrame).Fields) != 8 {
			t.Fatalf("read %v, %v", f, err)
		}
	})
	// The framer's own HeadersFrame, and the strings of the literals
	// (never indexed here): one per field name and value it has no
	// static entry for.
	t.Logf("allocs %v", allocs)
	if allocs > 1+12 {
		t.Fatalf("%.0f allocations per HEADERS frame", allocs)
	}
}

// FuzzHeaderBlock: whatever the bytes, headerBlock decodes them as the
// framer's own decoding does.
func FuzzHeaderBlock(f *testing.F) {
	f.Add(hpackBlock(":method", "GET", ":path", "/", "a", "1"), hpackBlock("b", "2"), 3)
	f.Add(hpackBlock("A", "1"), hpackBlock(":status", "200", ":method", "GET"), 0)
	f.Add(hpackBlock("trailer", "a, b, c", "x", "y\x00"), []byte{0x3f, 0xe1, 0x1f}, 1)
	f.Fuzz(func(t *testing.T, first, second []byte, split int) {
		readBoth(t, headerFrames(first, second, split))
	})
}
