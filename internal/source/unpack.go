// Package source turns a build's source — the tarball GitHub serves for a
// commit, or an archive the CLI uploaded to S3 — into a build context
// directory, and owns the rules that keep an untrusted archive inside it: no
// path or link that leaves the context, no devices, bounded size and file
// count, and the project's root directory resolved without escaping.
package source

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Limits bound what an archive may unpack to. A zero field takes its
// default.
type Limits struct {
	// MaxBytes bounds the content written, all files together. It is
	// counted as bytes are written, so a small gzip stream that inflates
	// to far more (a gzip bomb) stops here.
	MaxBytes int64
	// MaxFileBytes bounds a single file.
	MaxFileBytes int64
	// MaxFiles bounds the entries: files, directories and links.
	MaxFiles int
}

// The defaults are generous for source code (GitHub refuses files over
// 100 MiB; large monorepos have tens of thousands of files) and small for a
// build host's disk.
const (
	DefaultMaxBytes     = 1 << 30   // 1 GiB
	DefaultMaxFileBytes = 256 << 20 // 256 MiB
	DefaultMaxFiles     = 100_000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Stats describes what Unpack wrote.
type Stats struct {
	Files, Dirs, Symlinks, HardLinks int
	Bytes                            int64  // file content written
	StrippedPrefix                   string // top-level directory removed, "" if none
}

// Unpack extracts the tar archive read from r, gzip'd or not, into dst,
// which must be missing or empty.
//
// GitHub's tarballs put everything under one directory
// (owner-repo-sha7/); when every entry shares a single top-level directory
// it is stripped, so dst is the repository's root. An archive that has an
// entry for its own root ("./", as `tar -C dir .` writes) is taken as it is:
// that is how an upload whose only content is one directory keeps it.
//
// An entry that would leave dst, a symlink that resolves outside it, a
// hard link to anything but a regular file of the archive, and devices or
// fifos are refused with an *EntryError wrapping ErrUnsafePath or
// ErrUnsupportedEntry; limits are enforced as ErrTooLarge and
// ErrTooManyFiles. Files keep their executable bit and nothing else of
// their mode; ownership and times are ignored.
//
// Every write goes through an os.Root on dst, and symlinks are only created
// once all files are written, so no entry can redirect a later write. On
// error dst holds a partial tree: the caller removes it.
func Unpack(ctx context.Context, r io.Reader, dst string, lim Limits) (Stats, error) {
	if err := emptyDir(dst); err != nil {
		return Stats{}, err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return Stats{}, fmt.Errorf("source: %w", err)
	}
	defer root.Close()

	br := bufio.NewReader(r)
	var tarStream io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return Stats{}, readErr(ctx, err)
		}
		defer zr.Close()
		tarStream = zr
	}

	u := &unpacker{ctx: ctx, root: root, lim: lim.withDefaults(), symlinks: map[string]string{}}
	if err := u.extract(tar.NewReader(ctxReader{ctx, tarStream})); err != nil {
		return u.stats, err
	}
	if err := u.finish(); err != nil {
		return u.stats, err
	}
	return u.stats, nil
}

type unpacker struct {
	ctx   context.Context
	root  *os.Root
	lim   Limits
	stats Stats

	entries int
	// prefix is the first entry's top-level name; strip stays true while
	// every entry lives under it as a directory.
	prefix   string
	strip    bool
	hasRoot  bool
	symlinks map[string]string // archive path → target, created in finish
	links    []link            // symlinks and hard links in archive order
}

type link struct {
	name, target string // archive paths; target is the link text for symlinks
	hard         bool
	entry        string // the entry's name as written, for errors
}

func (u *unpacker) extract(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			// Only with GODEBUG=tarinsecurepath=0; cleanName says why.
			err = nil
		}
		if err != nil {
			return readErr(u.ctx, err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	if u.entries == 0 && !u.hasRoot {
		return fmt.Errorf("source: %w: the archive is empty", ErrInvalidArchive)
	}
	return nil
}

func (u *unpacker) entry(hdr *tar.Header, body io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // GitHub's pax_global_header: the commit id, nothing to write
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return entryErr(hdr.Name, ErrInvalidArchive, "the archive's root is not a directory")
		}
		u.hasRoot = true
		return nil
	}

	u.entries++
	if u.entries > u.lim.MaxFiles {
		return entryErr(hdr.Name, ErrTooManyFiles, "the archive has more than %d entries", u.lim.MaxFiles)
	}
	top, _, _ := strings.Cut(name, "/")
	if u.entries == 1 {
		u.prefix, u.strip = top, true
	}
	if top != u.prefix || (name == top && hdr.Typeflag != tar.TypeDir) {
		u.strip = false
	}
	if l, ok := u.underSymlink(name, hdr.Typeflag == tar.TypeSymlink); ok {
		return entryErr(hdr.Name, ErrUnsafePath, "it lies under the symlink %q", l)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.root.MkdirAll(name, 0o755); err != nil {
			return &EntryError{Name: hdr.Name, Err: err}
		}
		u.stats.Dirs++
	case tar.TypeReg:
		return u.writeFile(hdr, name, body)
	case tar.TypeSymlink:
		return u.addSymlink(hdr, name)
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "." {
			return entryErr(hdr.Name, ErrUnsafePath, "hard link to %q, outside the archive", hdr.Linkname)
		}
		u.links = append(u.links, link{name: name, target: target, hard: true, entry: hdr.Name})
	case tar.TypeChar, tar.TypeBlock:
		return entryErr(hdr.Name, ErrUnsupportedEntry, "device file")
	case tar.TypeFifo:
		return entryErr(hdr.Name, ErrUnsupportedEntry, "named pipe")
	default:
		return entryErr(hdr.Name, ErrUnsupportedEntry, "tar type %q", hdr.Typeflag)
	}
	return nil
}

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

// finish strips GitHub's top-level directory, then creates the links.
func (u *unpacker) finish() error {
	rename := func(p string) string { return p }
	if u.strip && !u.hasRoot {
		if err := u.stripPrefix(); err != nil {
			return err
		}
		u.stats.StrippedPrefix = u.prefix
		rename = func(p string) string {
			if p == u.prefix {
				return "."
			}
			return strings.TrimPrefix(p, u.prefix+"/")
		}
	}

	final := make(map[string]string, len(u.symlinks))
	for name, t := range u.symlinks {
		final[rename(name)] = t
	}
	lc := &linkChecker{links: final, budget: linkCheckBudget}
	for _, l := range u.links {
		name := rename(l.name)
		if p, ok := underAny(final, name); ok {
			return entryErr(l.entry, ErrUnsafePath, "it lies under the symlink %q", p)
		}
		if l.hard {
			continue
		}
		if err := lc.resolveInside(name); err != nil {
			return &EntryError{Name: l.entry, Err: err}
		}
	}

	// Hard links first: their targets must be regular files, and with no
	// symlink created yet nothing can be passed through on the way.
	for _, l := range u.links {
		if !l.hard {
			continue
		}
		name, target := rename(l.name), rename(l.target)
		if u.strip && !u.hasRoot && !strings.HasPrefix(l.target, u.prefix+"/") {
			target = "" // pointed outside the stripped directory
		}
		fi, err := u.root.Lstat(target)
		if target == "" || err != nil || !fi.Mode().IsRegular() {
			return entryErr(l.entry, ErrUnsafePath, "hard link to %q, which is not a regular file of the archive", l.target)
		}
		if err := u.mkParent(name, l.entry); err != nil {
			return err
		}
		if err := u.root.Link(target, name); err != nil {
			return &EntryError{Name: l.entry, Err: err}
		}
		u.stats.HardLinks++
	}
	for _, l := range u.links {
		if l.hard {
			continue
		}
		name := rename(l.name)
		if err := u.mkParent(name, l.entry); err != nil {
			return err
		}
		if err := u.root.Symlink(final[name], name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return entryErr(l.entry, ErrInvalidArchive, "symlink over an earlier entry")
			}
			return &EntryError{Name: l.entry, Err: err}
		}
		u.stats.Symlinks++
	}
	return nil
}

func (u *unpacker) mkParent(name, entry string) error {
	if dir := path.Dir(name); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return &EntryError{Name: entry, Err: err}
		}
	}
	return nil
}

// stripPrefix moves the contents of dst/prefix up into dst. The directory is
// first renamed to a name none of its children has, so a child named like
// the prefix itself does not collide.
func (u *unpacker) stripPrefix() error {
	if _, err := u.root.Lstat(u.prefix); errors.Is(err, fs.ErrNotExist) {
		return nil // only links under it, created after this
	}
	tmp := ".zeitwork-strip"
	for i := 0; ; i++ {
		if _, err := u.root.Lstat(u.prefix + "/" + tmp); errors.Is(err, fs.ErrNotExist) {
			break
		}
		tmp = fmt.Sprintf(".zeitwork-strip-%d", i)
	}
	if err := u.root.Rename(u.prefix, tmp); err != nil {
		return fmt.Errorf("source: strip %q: %w", u.prefix, err)
	}
	d, err := u.root.Open(tmp)
	if err != nil {
		return fmt.Errorf("source: strip %q: %w", u.prefix, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("source: strip %q: %w", u.prefix, err)
	}
	for _, n := range names {
		if err := u.root.Rename(tmp+"/"+n, n); err != nil {
			return fmt.Errorf("source: strip %q: %w", u.prefix, err)
		}
	}
	if err := u.root.Remove(tmp); err != nil {
		return fmt.Errorf("source: strip %q: %w", u.prefix, err)
	}
	return nil
}

// emptyDir makes sure dst exists and holds nothing: Unpack's guarantees
// about symlinks hold only for a tree it wrote entirely.
func emptyDir(dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	d, err := os.Open(dst)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("source: unpack into %s: directory is not empty", dst)
	}
	return nil
}

// readErr reports a failure to read the archive: the context's error if it
// was cancelled, else the stream is not a valid archive.
func readErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("source: %w: %v", ErrInvalidArchive, err)
}

// ctxReader stops reading once ctx is done, so that cancelling a build stops
// an unpack in the middle of a large file.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readTracker remembers a read error, to tell a broken archive from a
// failed write.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}
