package cli

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// ignoreFiles are read in every directory, in this order: a
// .zeitworkignore line can re-include (!) what .gitignore leaves out.
var ignoreFiles = []string{".gitignore", ".zeitworkignore"}

// alwaysSkipped never belong in a deployment's source.
var alwaysSkipped = map[string]bool{".git": true, ".zeitwork": true}

// archiveSummary is what writeArchive put in.
type archiveSummary struct {
	Files int
	Bytes int64 // before compression
}

// writeArchive writes dir as a .tar.gz to w, leaving out what the
// .gitignore and .zeitworkignore files in it (at any depth, with git's
// rules) ignore, and .git and .zeitwork.
func writeArchive(w io.Writer, dir string) (archiveSummary, error) {
	var sum archiveSummary
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	// patterns[d] are the patterns in force in directory d: its parents'
	// and its own, later ones winning.
	patterns := map[string][]gitignore.Pattern{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if rel == "." {
			patterns["."] = readIgnores(path, nil, nil)
			return nil
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if alwaysSkipped[d.Name()] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		inherited := patterns[filepath.Dir(rel)]
		if gitignore.NewMatcher(inherited).Match(parts, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case d.IsDir():
			patterns[rel] = readIgnores(path, parts, inherited)
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		case !info.Mode().IsRegular():
			return nil // sockets, devices, pipes: not source
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		// Who owns the files here means nothing where they are built.
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, f)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		sum.Files++
		sum.Bytes += n
		return nil
	})
	if err != nil {
		return sum, fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return sum, err
	}
	return sum, gz.Close()
}

// readIgnores is inherited plus the patterns of dir's ignore files;
// domain is dir's path from the root.
func readIgnores(dir string, domain []string, inherited []gitignore.Pattern) []gitignore.Pattern {
	ps := append([]gitignore.Pattern(nil), inherited...)
	for _, name := range ignoreFiles {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue // none here: nothing to add
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), " \r")
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			ps = append(ps, gitignore.ParsePattern(line, domain))
		}
		f.Close()
	}
	return ps
}
