// Package edge is the edge proxy's routing: which instances serve a Host.
// It owns host normalisation and the route table (host → deployment →
// healthy instances with the node-proxies that reach them), which is built
// from the database, swapped atomically so a request never sees half a
// table, and snapshotted to disk so an edge can start while the database is
// away. (The proxy itself, TLS and metrics arrive with the rest of the edge
// issue.)
package edge

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadHost: the Host header cannot name an app.
var ErrBadHost = errors.New("bad host")

var hostProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule(), idna.StrictDomainName(true), idna.VerifyDNSLength(true))

// NormalizeHost turns a Host header into the name routes are keyed by:
// the port dropped, lower case, no trailing dot, Unicode names in their
// ASCII (punycode) form. IP literals and malformed names are refused: the
// edge routes names, and an IP means the client did not ask for an app.
func NormalizeHost(h string) (string, error) {
	if h == "" || len(h) > 300 || !utf8.ValidString(h) {
		return "", ErrBadHost
	}
	host := h
	if strings.HasPrefix(h, "[") {
		return "", ErrBadHost // an IPv6 literal, with or without port
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		var port string
		host, port = h[:i], h[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return "", ErrBadHost
		}
	}
	host = strings.TrimSuffix(host, ".") // one root dot is allowed, two are not
	if host == "" || strings.HasSuffix(host, ".") {
		return "", ErrBadHost
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return "", ErrBadHost
	}
	if net.ParseIP(host) != nil {
		return "", ErrBadHost
	}
	ascii, err := hostProfile.ToASCII(host)
	// Mapping can drop ignorable characters and leave an empty label.
	if err != nil || ascii == "" || len(ascii) > 253 || strings.HasPrefix(ascii, ".") || strings.HasSuffix(ascii, ".") || strings.Contains(ascii, "..") {
		return "", ErrBadHost
	}
	ascii = strings.ToLower(ascii)
	// A name must be its own normal form; some inputs map to punycode that
	// does not decode back (found by FuzzNormalizeHost).
	if again, err := hostProfile.ToASCII(ascii); err != nil || again != ascii {
		return "", ErrBadHost
	}
	return ascii, nil
}

// plainName says whether h is already a normal name that NormalizeHost
// would return unchanged: lower-case letters, digits and hyphens in labels
// of 1–63 that neither start nor end with a hyphen, no punycode, a last
// label with a letter (so not an IP). Route tables are built from
// hundreds of thousands of such names; this skips the IDNA machinery for
// them (FuzzPlainName checks the promise).
func plainName(h string) bool {
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
