package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Subdir returns the directory that a project's root_directory setting
// names inside the unpacked tree dir: "" and "/" name dir itself, and a
// leading slash is read as the repository's root ("/apps/web" is
// "apps/web"). The result has its symlinks resolved, so the builder hands
// BuildKit a real directory that is inside dir; a ".." component or a
// symlink that leads out of dir is ErrUnsafePath, a missing directory
// ErrNotFound.
func Subdir(dir, rootDirectory string) (string, error) {
	p, err := resolve(dir, rootDirectory, "root directory")
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("source: %w: root directory %q is not a directory", ErrNotFound, rootDirectory)
	}
	return p, nil
}

// File returns the regular file at rel inside dir (a Dockerfile path
// setting), resolved like Subdir.
func File(dir, rel string) (string, error) {
	if strings.Trim(rel, "/.") == "" {
		return "", fmt.Errorf("source: %w: file %q", ErrNotFound, rel)
	}
	p, err := resolve(dir, rel, "file")
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("source: %w: %q is not a file", ErrNotFound, rel)
	}
	return p, nil
}

func resolve(dir, rel, what string) (string, error) {
	for c := range strings.SplitSeq(rel, "/") {
		if c == ".." {
			return "", fmt.Errorf("source: %w: %s %q contains \"..\"", ErrUnsafePath, what, rel)
		}
	}
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("source: %w", err)
	}
	clean := strings.TrimPrefix(path.Clean("/"+rel), "/")
	if clean == "" {
		return base, nil
	}
	// The tree is ours and no longer changes, so resolving then checking is
	// not racy.
	p, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(clean)))
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Lstat(filepath.Join(base, filepath.FromSlash(clean))); lerr == nil {
			// The path exists but leads nowhere: a dangling link, maybe
			// to a place outside; refuse without saying more.
			return "", fmt.Errorf("source: %w: %s %q is a link that leads nowhere", ErrNotFound, what, rel)
		}
		return "", fmt.Errorf("source: %w: %s %q does not exist", ErrNotFound, what, rel)
	}
	if err != nil {
		return "", fmt.Errorf("source: %s %q: %w", what, rel, err)
	}
	if r, err := filepath.Rel(base, p); err != nil || !filepath.IsLocal(r) {
		return "", fmt.Errorf("source: %w: %s %q leads outside the source through a symlink", ErrUnsafePath, what, rel)
	}
	return p, nil
}
