package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

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
