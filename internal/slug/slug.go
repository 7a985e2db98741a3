// Package slug makes the names organisations and projects go by in URLs
// and host names: lower-case DNS labels (`<slug>.<apps-domain>`), never
// shaped like a UUID, because `<deployment-id>.<apps-domain>` serves one
// deployment and a project must not be able to take that host.
package slug

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/uuid"
)

// MaxLen is a DNS label's length limit.
const MaxLen = 63

var pattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ErrInvalid is a slug that cannot be used; the wrapped message says why.
var ErrInvalid = errors.New("invalid slug")

// Valid reports why s cannot be a slug, or nil. The database checks the
// same (projects_slug_check, projects_slug_not_uuid_check).
func Valid(s string) error {
	switch {
	case !pattern.MatchString(s):
		return fmt.Errorf("%w %q: use 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit", ErrInvalid, s)
	case LooksLikeUUID(s):
		return fmt.Errorf("%w %q: it looks like a UUID, which names deployments", ErrInvalid, s)
	}
	return nil
}

// LooksLikeUUID says whether s parses as a UUID in a form a host name can
// carry (with or without hyphens).
func LooksLikeUUID(s string) bool {
	if len(s) != 32 && len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// From makes a slug from a display name: lower-cased, every run of other
// characters a hyphen, trimmed to MaxLen. It returns "" when nothing
// usable is left (a name of only punctuation, or one shaped like a UUID).
func From(name string) string {
	var b strings.Builder
	hyphen := false
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if hyphen && b.Len() > 0 {
				b.WriteByte('-')
			}
			hyphen = false
			b.WriteRune(c)
			continue
		}
		hyphen = true
	}
	s := b.String()
	if len(s) > MaxLen {
		s = strings.TrimRight(s[:MaxLen], "-")
	}
	if Valid(s) != nil {
		return ""
	}
	return s
}

// WithSuffix is s with "-<n>" appended, shortened so that it stays a slug:
// the next candidate when s is taken.
func WithSuffix(s string, n int) string {
	suffix := fmt.Sprintf("-%d", n)
	if len(s)+len(suffix) > MaxLen {
		s = strings.TrimRight(s[:MaxLen-len(suffix)], "-")
	}
	return s + suffix
}
