package runtime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// lineWriter writes numbered 10-byte lines to a rotating file of 10 lines.
type lineWriter struct {
	t    *testing.T
	w    *logwriter.File
	next int
}

func (lw *lineWriter) lines(n int) {
	for range n {
		lw.next++
		if err := lw.w.Write(fmt.Appendf(nil, "line %04d\n", lw.next)); err != nil {
			lw.t.Fatal(err)
		}
	}
}

func newLineWriter(t *testing.T) (*lineWriter, string) {
	path := filepath.Join(t.TempDir(), "x.log")
	w, err := logwriter.Open(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return &lineWriter{t: t, w: w}, path
}

// readLines reads r to its end and checks that the lines are first..last.
func readLines(t *testing.T, r io.Reader, first, last int) {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := first; i <= last; i++ {
		fmt.Fprintf(&want, "line %04d\n", i)
	}
	if string(b) != want.String() {
		t.Fatalf("read:\n%s\nwant lines %d to %d", b, first, last)
	}
}

func openReader(t *testing.T, path string) *logReader {
	cur, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	lr := &logReader{path: path, state: &logState{}, cur: cur, ctx: t.Context(), done: make(chan struct{}), gone: func() bool { return false }}
	t.Cleanup(func() { lr.Close() })
	return lr
}

// A reader that has seen its file rotated away, while the writer rotates
// once more before the reader opens the new file, reads the generation in
// between too: nothing is skipped.
func TestReaderKeepsTheGenerationRotatedWhileItMovesOn(t *testing.T) {
	lw, path := newLineWriter(t)
	lw.lines(10) // a full first file
	lr := openReader(t, path)
	readLines(t, lr, 1, 10)

	lw.lines(1) // rotated: line 11 starts the second file
	beforeReopen = func() {
		beforeReopen = nil
		lw.lines(10) // 12..20 fill the second, 21 starts a third
	}
	t.Cleanup(func() { beforeReopen = nil })
	readLines(t, lr, 11, 21)
}

// A reader that has opened the new file, while the writer rotates it away
// twice before the reader looks at the previous generation, does not read
// the generation after the new file before it: everything comes in order.
func TestReaderNeverReadsALaterGenerationFirst(t *testing.T) {
	lw, path := newLineWriter(t)
	lw.lines(10)
	lr := openReader(t, path)
	readLines(t, lr, 1, 10)

	lw.lines(1) // rotated: line 11 starts the second file
	beforeOpenPrev = func() {
		beforeOpenPrev = nil
		lw.lines(20) // 12..20 fill the second, 21..30 a third, 31 a fourth
	}
	t.Cleanup(func() { beforeOpenPrev = nil })
	readLines(t, lr, 11, 31)
}

// Logs opens the previous generation, then the current one; when the
// writer rotates in between, the generation in between is read too, in
// order.
func TestGenerationsRotatedWhileLogsOpensStayInOrder(t *testing.T) {
	lw, path := newLineWriter(t)
	lw.lines(15) // 1..10 in .1, 11..15 in the log
	old, err := os.Open(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	lw.lines(6) // 16..20 fill it, 21 starts a new one: 11..20 is now .1
	lr := openReader(t, path)
	lr.prev = rotatedBefore(old, lr.cur, path+".1")
	readLines(t, lr, 1, 21)

	// No rotation in between: just the previous one.
	lw2, path2 := newLineWriter(t)
	lw2.lines(15)
	old2, err := os.Open(path2 + ".1")
	if err != nil {
		t.Fatal(err)
	}
	lr2 := openReader(t, path2)
	lr2.prev = rotatedBefore(old2, lr2.cur, path2+".1")
	readLines(t, lr2, 1, 15)

	// Two rotations after the current one was opened: <id>.log.1 is then
	// a later generation than it, not one in between, and is not read
	// before it. The generation in between is gone whole (11..20).
	lw3, path3 := newLineWriter(t)
	lw3.lines(15)
	old3, err := os.Open(path3 + ".1")
	if err != nil {
		t.Fatal(err)
	}
	lw3.lines(6) // 11..20 now in .1, 21 in the log
	lr3 := openReader(t, path3)
	lw3.lines(20) // 21..30 rotated to .1, 31..40 too, 41 in the log
	lr3.prev = rotatedBefore(old3, lr3.cur, path3+".1")
	b, err := io.ReadAll(lr3)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 1; i <= 41; i++ {
		if i <= 10 || i > 20 {
			fmt.Fprintf(&want, "line %04d\n", i)
		}
	}
	if string(b) != want.String() {
		t.Fatalf("read:\n%s\nwant lines 1 to 10, then 21 to 41", b)
	}
}
