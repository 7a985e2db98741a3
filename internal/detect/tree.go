package detect

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
)

// maxFileSize bounds every file Detect reads: the files it looks at are
// manifests and configs, and a source tree is untrusted input.
const maxFileSize = 1 << 20

// tree is the read-only view of a source tree that detectors share. It caches
// package.json, which most of them look at, and collects what was found but
// not enough (near) for the error that lists what was looked for.
type tree struct {
	fsys fs.FS
	near []string

	pkgRead bool
	pkg     *packageJSON
	pkgErr  error
}

func newTree(fsys fs.FS) *tree { return &tree{fsys: fsys} }

func (t *tree) stat(name string) (fs.FileInfo, bool) {
	if !fs.ValidPath(name) {
		return nil, false
	}
	fi, err := fs.Stat(t.fsys, name)
	return fi, err == nil
}

func (t *tree) isFile(name string) bool {
	fi, ok := t.stat(name)
	return ok && fi.Mode().IsRegular()
}

func (t *tree) isDir(name string) bool {
	fi, ok := t.stat(name)
	return ok && fi.IsDir()
}

// firstFile returns the first of names that is a file, or "".
func (t *tree) firstFile(names ...string) string {
	for _, n := range names {
		if t.isFile(n) {
			return n
		}
	}
	return ""
}

// read returns a file's content, refusing files over maxFileSize.
func (t *tree) read(name string) ([]byte, error) {
	f, err := t.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxFileSize)
	}
	return b, nil
}

// readOptional is read for files whose absence is normal: it returns nil and
// no error when the file does not exist.
func (t *tree) readOptional(name string) ([]byte, error) {
	if !t.isFile(name) {
		return nil, nil
	}
	return t.read(name)
}

// head returns up to n bytes from the start of a file, or nil. Lockfiles can
// be megabytes; their format marker is on the first lines.
func (t *tree) head(name string, n int) []byte {
	if !t.isFile(name) {
		return nil
	}
	f, err := t.fsys.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, int64(n)))
	return b
}

// dirs returns the names of the directories directly under dir, sorted.
func (t *tree) dirs(dir string) []string {
	entries, err := fs.ReadDir(t.fsys, dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// files returns the paths of the regular files directly under dir whose
// names match pattern, sorted.
func (t *tree) files(dir, pattern string) []string {
	entries, err := fs.ReadDir(t.fsys, dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if ok, _ := path.Match(pattern, e.Name()); ok {
			out = append(out, path.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// packageJSON returns the parsed package.json, nil if there is none. A
// package.json that is not JSON is an error: npm would fail on it too, and
// building it as something else would hide the mistake.
func (t *tree) packageJSON() (*packageJSON, error) {
	if t.pkgRead {
		return t.pkg, t.pkgErr
	}
	t.pkgRead = true
	b, err := t.readOptional("package.json")
	if err != nil {
		t.pkgErr = err
		return nil, err
	}
	if b == nil {
		return nil, nil
	}
	t.pkg, t.pkgErr = parsePackageJSON(b)
	if t.pkgErr != nil {
		t.pkgErr = fmt.Errorf("package.json: %w", t.pkgErr)
	}
	return t.pkg, t.pkgErr
}

// noteNear records something that was found but did not make a match, once.
func (t *tree) noteNear(s string) {
	for _, n := range t.near {
		if n == s {
			return
		}
	}
	t.near = append(t.near, s)
}
