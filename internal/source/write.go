package source

import (
	"archive/tar"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// maxPath is Linux's PATH_MAX: no longer name could be created anyway.
// maxDepth keeps a crafted archive of very deep paths from costing a
// builder minutes of syscalls (each write walks every component).
const (
	maxPath  = 4096
	maxDepth = 256
)

// cleanName turns an entry's name into a slash path relative to the
// archive's root ("." for the root itself). Any ".." component is refused,
// even one that would stay inside: no legitimate archive needs it.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", entryErr(name, ErrInvalidArchive, "empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", entryErr(name, ErrUnsafePath, "absolute path")
	}
	for c := range strings.SplitSeq(name, "/") {
		if c == ".." {
			return "", entryErr(name, ErrUnsafePath, "path contains \"..\"")
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", entryErr(name, ErrInvalidArchive, "NUL in name")
	}
	if len(name) > maxPath {
		return "", entryErr(name[:64]+"…", ErrInvalidArchive, "name longer than %d bytes", maxPath)
	}
	if strings.Count(name, "/") > maxDepth {
		return "", entryErr(name, ErrInvalidArchive, "more than %d directories deep", maxDepth)
	}
	return path.Clean(name), nil
}

// underSymlink reports the archive symlink that name is, or lies under.
// Refusing these keeps the tree simple: no write ever goes through a link,
// and Git cannot produce such an archive anyway.
func (u *unpacker) underSymlink(name string, self bool) (string, bool) {
	p := name
	if !self {
		if _, ok := u.symlinks[p]; ok {
			return p, true
		}
	}
	for {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return "", false
		}
		p = p[:i]
		if _, ok := u.symlinks[p]; ok {
			return p, true
		}
	}
}

func (u *unpacker) writeFile(hdr *tar.Header, name string, body io.Reader) error {
	if hdr.Size > u.lim.MaxFileBytes {
		return entryErr(hdr.Name, ErrTooLarge, "the file is %d bytes, over the limit of %d", hdr.Size, u.lim.MaxFileBytes)
	}
	if dir := path.Dir(name); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return &EntryError{Name: hdr.Name, Err: err}
		}
	}
	// A later entry replaces an earlier one, as tar does. Removing first
	// (rather than truncating) leaves a hard link to the old file intact.
	if err := u.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &EntryError{Name: hdr.Name, Err: err}
	}
	mode := fileMode(hdr.Mode)
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return &EntryError{Name: hdr.Name, Err: err}
	}
	// Count what is written, not what headers claim, and stop one byte past
	// the allowance: a bomb costs at most the limit in disk and time.
	allowed := min(u.lim.MaxFileBytes, u.lim.MaxBytes-u.stats.Bytes)
	in := &readTracker{r: io.LimitReader(body, allowed+1)}
	n, err := io.Copy(f, in)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if n > allowed {
		_ = u.root.Remove(name)
		u.stats.Bytes += allowed
		if allowed == u.lim.MaxFileBytes {
			return entryErr(hdr.Name, ErrTooLarge, "the file is over the limit of %d bytes", u.lim.MaxFileBytes)
		}
		return entryErr(hdr.Name, ErrTooLarge, "the archive unpacks to more than %d bytes", u.lim.MaxBytes)
	}
	u.stats.Bytes += n
	if in.err != nil {
		// The archive, not the disk, failed.
		if cerr := u.ctx.Err(); cerr != nil {
			return cerr
		}
		return entryErr(hdr.Name, ErrInvalidArchive, "%v", in.err)
	}
	if err != nil {
		return &EntryError{Name: hdr.Name, Err: err}
	}
	// The umask must not decide the mode the build sees.
	if err := u.root.Chmod(name, mode); err != nil {
		return &EntryError{Name: hdr.Name, Err: err}
	}
	u.stats.Files++
	return nil
}

// fileMode keeps the one bit of a file's mode that matters to a build.
func fileMode(m int64) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

func (u *unpacker) addSymlink(hdr *tar.Header, name string) error {
	t := hdr.Linkname
	switch {
	case t == "":
		return entryErr(hdr.Name, ErrInvalidArchive, "symlink with an empty target")
	case strings.HasPrefix(t, "/"):
		return entryErr(hdr.Name, ErrUnsafePath, "symlink to the absolute path %q", t)
	case strings.ContainsRune(t, 0):
		return entryErr(hdr.Name, ErrInvalidArchive, "NUL in symlink target")
	case len(t) > maxPath:
		return entryErr(hdr.Name, ErrInvalidArchive, "symlink target longer than %d bytes", maxPath)
	}
	// Refuse early what leaves even dst; finish checks again against the
	// final root, through other links, once stripping is decided.
	if lexicallyEscapes(path.Join(path.Dir(name), t)) {
		return entryErr(hdr.Name, ErrUnsafePath, "symlink to %q leaves the build context", t)
	}
	if _, err := u.root.Lstat(name); err == nil {
		return entryErr(hdr.Name, ErrInvalidArchive, "symlink over an earlier entry")
	}
	if _, dup := u.symlinks[name]; !dup {
		u.links = append(u.links, link{name: name, target: t, entry: hdr.Name})
	}
	u.symlinks[name] = t
	return nil
}

func lexicallyEscapes(p string) bool { return p == ".." || strings.HasPrefix(p, "../") }
