package logwriter

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The writer never lets a file pass its bound, cuts at line ends when a
// line fits, and loses nothing at the seam: the rotated file and the
// current one together end with exactly what was written last.
func TestRotatingFileKeepsTheBoundAndWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	const bound = 100
	w, err := Open(path, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var all bytes.Buffer
	for i := range 50 {
		chunk := fmt.Sprintf("line %d %s\n", i, strings.Repeat("y", i%7))
		if i%10 == 9 {
			chunk += strings.Repeat("z", 150) + "\n" // longer than the bound
		}
		all.WriteString(chunk)
		if err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + ".1"} {
			if fi, err := os.Stat(p); err == nil && fi.Size() > bound {
				t.Fatalf("after write %d: %s is %d bytes", i, filepath.Base(p), fi.Size())
			}
		}
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(all.String(), string(old)+string(cur)) {
		t.Fatalf("the two files are not the tail of what was written:\n%q\n%q", old, cur)
	}
	if len(cur) > 0 && !strings.HasPrefix(string(cur), "line ") && !strings.HasPrefix(string(cur), "z") {
		t.Fatalf("the current file starts mid-line: %q", cur)
	}

	// Reopened (the instance restarted), it appends and counts what is there.
	w.Close()
	w2, err := Open(path, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if w2.size != int64(len(cur)) {
		t.Fatalf("reopened at size %d, file has %d", w2.size, len(cur))
	}
}
