package domains

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/zeitwork/zeitwork/internal/hostname"
)

// namePattern is the database's domains_name_check pattern: a name that passes
// here never reaches the database only to be refused by its CHECK (a 500).
var namePattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Normalize turns what a user typed into the name a domain is stored and
// routed under (lower case, no trailing dot, Unicode as punycode), or says
// why it cannot be a custom domain. It does not know the platform's own
// names; Service.Add refuses those.
func Normalize(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	shown := s
	if len(shown) > 80 {
		shown = shown[:80] + "…"
	}
	switch {
	case s == "":
		return "", fmt.Errorf("%w: the name is empty", ErrInvalidName)
	case strings.Contains(s, "://") || strings.ContainsAny(s, "/@?#"):
		return "", fmt.Errorf("%w: %q: give the host name alone (app.example.com), without scheme or path", ErrInvalidName, shown)
	case isIP(s):
		return "", fmt.Errorf("%w: %q is an IP address; a custom domain is a host name", ErrInvalidName, shown)
	case strings.Contains(s, ":"):
		// hostname.Normalize reads a Host header and drops the port; in a
		// domain name a port is a mistake to point out, not to ignore.
		return "", fmt.Errorf("%w: %q: give the host name without a port", ErrInvalidName, shown)
	}
	name, err := hostname.Normalize(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a valid host name", ErrInvalidName, shown)
	}
	if !strings.Contains(name, ".") {
		return "", fmt.Errorf("%w: %q is a single label; a custom domain looks like app.example.com", ErrInvalidName, shown)
	}
	if len(name) > 253 || !namePattern.MatchString(name) {
		return "", fmt.Errorf("%w: %q is not a valid host name", ErrInvalidName, shown)
	}
	// No top-level domain is numeric; such a name is an IPv4 address in
	// a shorthand (127.1) that resolvers may treat as one.
	if tld := name[strings.LastIndexByte(name, '.')+1:]; strings.Trim(tld, "0123456789") == "" {
		return "", fmt.Errorf("%w: %q looks like an IP address; a custom domain is a host name", ErrInvalidName, shown)
	}
	// A public suffix (co.uk, github.io) is no one's domain: nobody could
	// prove owning it, and it would look like a claim on everything below.
	if suffix, _ := publicsuffix.PublicSuffix(name); suffix == name {
		return "", fmt.Errorf("%w: %q is a public suffix, not a domain of its own", ErrInvalidName, shown)
	}
	return name, nil
}

func isIP(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if _, err := netip.ParseAddrPort(s); err == nil {
		return true
	}
	if host, ok := strings.CutPrefix(s, "["); ok { // [v6] or [v6]:port
		host, _, _ = strings.Cut(host, "]")
		_, err := netip.ParseAddr(host)
		return err == nil
	}
	return false
}

// under reports whether name is below domain.
func under(name, domain string) bool {
	return strings.HasSuffix(name, "."+domain)
}
