package source_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeitwork/zeitwork/internal/source"
)

func TestSubdirAndFile(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ctx")
	for _, d := range []string{"apps/web", "real/api"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"apps/web/Dockerfile", "real/api/Dockerfile", "README.md"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(parent, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"api":      "real/api",
		"escape":   "../outside",
		"etc":      "/etc",
		"dangling": "../nowhere",
		"apps/up":  "..",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	real := func(p string) string {
		r, err := filepath.EvalSymlinks(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	for _, tc := range []struct {
		rootDirectory string
		want          string // relative to dir, or "" when an error is expected
		err           error
	}{
		{"", ".", nil},
		{"/", ".", nil},
		{"apps/web", "apps/web", nil},
		{"/apps/web/", "apps/web", nil},
		{"./apps//web", "apps/web", nil},
		{"api", "real/api", nil},      // an in-tree symlink is resolved
		{"apps/up/apps", "apps", nil}, // through a link back to the root
		{"../outside", "", source.ErrUnsafePath},
		{"apps/../..", "", source.ErrUnsafePath},
		{"escape", "", source.ErrUnsafePath},
		{"etc", "", source.ErrUnsafePath},
		{"dangling", "", source.ErrNotFound},
		{"missing", "", source.ErrNotFound},
		{"README.md", "", source.ErrNotFound}, // a file, not a directory
	} {
		got, err := source.Subdir(dir, tc.rootDirectory)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Subdir(%q) = %q, %v; want %v", tc.rootDirectory, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != real(tc.want) {
			t.Errorf("Subdir(%q) = %q, %v; want %q", tc.rootDirectory, got, err, real(tc.want))
		}
	}

	if got, err := source.File(dir, "api/Dockerfile"); err != nil || got != real("real/api/Dockerfile") {
		t.Errorf("File(api/Dockerfile) = %q, %v", got, err)
	}
	for rel, want := range map[string]error{
		"apps":              source.ErrNotFound, // a directory
		"":                  source.ErrNotFound,
		"nope/Dockerfile":   source.ErrNotFound,
		"escape/Dockerfile": source.ErrNotFound,
		"etc/passwd":        source.ErrUnsafePath,
		"../ctx/README.md":  source.ErrUnsafePath,
	} {
		if _, err := source.File(dir, rel); !errors.Is(err, want) {
			t.Errorf("File(%q): err = %v, want %v", rel, err, want)
		}
	}
}
