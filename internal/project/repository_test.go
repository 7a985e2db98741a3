package project_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/project"
)

func TestValidBranch(t *testing.T) {
	for _, b := range []string{"main", "dev", "feature/login", "release-1.2", "v2_x", "ünïcode"} {
		if err := project.ValidBranch(b); err != nil {
			t.Errorf("%q: %v", b, err)
		}
	}
	for _, b := range []string{"", "-x", "--upload-pack=evil", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", `a\b`,
		"/a", "a/", "a//b", "a/.b", ".a", "a.", "a.lock", "@", "a@{1}", "a\x00b", "a\nb", strings.Repeat("x", 256)} {
		if err := project.ValidBranch(b); !errors.Is(err, project.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", b, err)
		}
	}
}

func TestCleanRootDirectory(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", ".": "", "/./": "", "web": "web", "/apps/web/": "apps/web", "a/b/c": "a/b/c"} {
		if got, err := project.CleanRootDirectory(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../b", "a/./b", "a//b", `a\b`, "a\x00", "a\nb", strings.Repeat("x", 1025)} {
		if _, err := project.CleanRootDirectory(in); !errors.Is(err, project.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", in, err)
		}
	}
}
