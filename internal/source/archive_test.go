package source_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// entry describes one tar entry for the archives the tests build by hand.
type entry struct {
	name string
	typ  byte   // tar.TypeReg when zero
	body string // regular files
	link string // symlink target or hard link name
	mode int64  // 0o644 when zero
	size int64  // header size when the body is produced by sizeBody
}

func file(name, body string) entry            { return entry{name: name, body: body} }
func exe(name, body string) entry             { return entry{name: name, body: body, mode: 0o775} }
func dir(name string) entry                   { return entry{name: name, typ: tar.TypeDir, mode: 0o775} }
func symlink(name, target string) entry       { return entry{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) entry      { return entry{name: name, typ: tar.TypeLink, link: target} }
func special(name string, typ byte) entry     { return entry{name: name, typ: typ} }
func zeros(name string, size int64) entry     { return entry{name: name, size: size} }
func rawTar(t testing.TB, es ...entry) []byte { return writeTar(t, false, es) }
func tgz(t testing.TB, es ...entry) []byte    { return writeTar(t, true, es) }

func writeTar(t testing.TB, gz bool, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw, _ = gzip.NewWriterLevel(&buf, gzip.BestCompression)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		var body io.Reader
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
			body = strings.NewReader(e.body)
			if e.size > 0 {
				h.Size = e.size
				body = io.LimitReader(zeroReader{}, e.size)
			}
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			// What git archive writes first: the commit id.
			h = &tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": e.body}}
			body = nil
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sandbox is a temporary directory holding the build context (ctx, not yet
// created) next to a directory an attack would aim at (outside, with a
// secret in it).
type sandbox struct {
	parent, dst, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	parent := t.TempDir()
	s := sandbox{parent: parent, dst: filepath.Join(parent, "ctx"), outside: filepath.Join(parent, "outside")}
	if err := os.Mkdir(s.outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertContained fails unless the sandbox holds only the context and the
// untouched secret, and no symlink in the context leads out of it.
func (s sandbox) assertContained(t testing.TB) {
	t.Helper()
	err := filepath.WalkDir(s.parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.parent, p)
		switch {
		case rel == "." || rel == "ctx" || rel == "outside" || strings.HasPrefix(rel, "ctx"+string(filepath.Separator)):
		case rel == filepath.Join("outside", "secret"):
			if b, _ := os.ReadFile(p); string(b) != "secret" {
				t.Errorf("outside/secret was changed to %q", b)
			}
		default:
			t.Errorf("written outside the context: %s", rel)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			if filepath.IsAbs(target) {
				t.Errorf("symlink %s has absolute target %q", rel, target)
			}
			if real, err := filepath.EvalSymlinks(p); err == nil {
				base, _ := filepath.EvalSymlinks(s.dst)
				if r, err := filepath.Rel(base, real); err != nil || !filepath.IsLocal(r) {
					t.Errorf("symlink %s resolves outside the context to %s", rel, real)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tree renders dir as "path: description" lines, sorted, for comparison.
func tree(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			lines = append(lines, fmt.Sprintf("%s -> %s", rel, target))
		case d.IsDir():
			lines = append(lines, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			lines = append(lines, fmt.Sprintf("%s %o %q", rel, info.Mode().Perm(), b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
