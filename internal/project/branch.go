package project

import (
	"fmt"
	"strings"
	"unicode"
)

// MaxBranch bounds a branch name, as git's own limits on ref names do in
// practice.
const MaxBranch = 255

// BranchProblem says why b cannot be a branch name, or "" when it can: git's
// rules for ref names (git check-ref-format --branch), a length bound, and
// no leading "-", so that a name can never be read as an option.
func BranchProblem(b string) string {
	switch {
	case b == "":
		return "must not be empty"
	case len(b) > MaxBranch:
		return fmt.Sprintf("must have at most %d characters", MaxBranch)
	case strings.HasPrefix(b, "-"), strings.HasPrefix(b, "/"), strings.HasSuffix(b, "/"), strings.HasSuffix(b, "."),
		strings.HasSuffix(b, ".lock"), strings.Contains(b, ".."), strings.Contains(b, "//"), strings.Contains(b, "@{"),
		strings.Contains(b, "/."), strings.HasPrefix(b, "."), b == "@",
		strings.ContainsFunc(b, func(r rune) bool {
			return r <= ' ' || unicode.IsControl(r) || r == unicode.ReplacementChar || strings.ContainsRune("~^:?*[\\", r)
		}):
		return fmt.Sprintf("%q is not a valid git branch name", b)
	}
	return ""
}
