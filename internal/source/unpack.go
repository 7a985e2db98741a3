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
	"os"
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
