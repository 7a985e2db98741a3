// Package hostname owns the normal form of a host name: the one spelling
// under which the edge keys its routes and custom domains are stored, so
// that a name typed by a user and a Host header sent by a browser meet.
// It is pure string work, shared by the edge and the domains package
// without either importing the other.
package hostname

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrInvalid: the input cannot name an app.
var ErrInvalid = errors.New("bad host")

var profile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule(), idna.StrictDomainName(true), idna.VerifyDNSLength(true))

// Normalize turns a Host header into the name routes are keyed by:
// the port dropped, lower case, no trailing dot, Unicode names in their
// ASCII (punycode) form. IP literals and malformed names are refused: the
// edge routes names, and an IP means the client did not ask for an app.
func Normalize(h string) (string, error) {
	if h == "" || len(h) > 300 || !utf8.ValidString(h) {
		return "", ErrInvalid
	}
	host := h
	if strings.HasPrefix(h, "[") {
		return "", ErrInvalid // an IPv6 literal, with or without port
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		var port string
		host, port = h[:i], h[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return "", ErrInvalid
		}
	}
	host = strings.TrimSuffix(host, ".") // one root dot is allowed, two are not
	if host == "" || strings.HasSuffix(host, ".") {
		return "", ErrInvalid
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return "", ErrInvalid
	}
	if net.ParseIP(host) != nil {
		return "", ErrInvalid
	}
	ascii, err := profile.ToASCII(host)
	// Mapping can drop ignorable characters and leave an empty label.
	if err != nil || ascii == "" || len(ascii) > 253 || strings.HasPrefix(ascii, ".") || strings.HasSuffix(ascii, ".") || strings.Contains(ascii, "..") {
		return "", ErrInvalid
	}
	ascii = strings.ToLower(ascii)
	// A name must be its own normal form; some inputs map to punycode that
	// does not decode back (found by FuzzNormalize).
	if again, err := profile.ToASCII(ascii); err != nil || again != ascii {
		return "", ErrInvalid
	}
	return ascii, nil
}

// IsPlain says whether h is already a normal name that Normalize would
// return unchanged: lower-case letters, digits and hyphens in labels of
// 1–63 that neither start nor end with a hyphen, no punycode, a last label
// with a letter (so not an IP). Route tables are built from hundreds of
// thousands of such names; this skips the IDNA machinery for them
// (FuzzPlain checks the promise).
func IsPlain(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	label, letter := 0, false
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 || h[i-1] == '-' {
				return false
			}
			label, letter = 0, false
			continue
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-':
			if label == 0 {
				return false
			}
			// "xn--" (and any "--", to be safe) is IDNA's business.
			if h[i-1] == '-' {
				return false
			}
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && h[len(h)-1] != '-' && letter
}
