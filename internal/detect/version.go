package detect

import (
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Versions found in a source tree end up in image tags, so every parser here
// returns either a tag made of digits and dots or "" (not understood), never
// the raw input.

var (
	exactVersion = regexp.MustCompile(`^\d+(\.\d+){0,2}$`)
	leadingNum   = regexp.MustCompile(`^\d+`)
	majorMinor   = regexp.MustCompile(`\d+\.\d+`)
	rangeOpSpace = regexp.MustCompile(`([<>=^~]+)\s+`)
	composerOr   = regexp.MustCompile(`\s*\|\|?\s*`)
)

// nodeLTSCodenames maps nvm's lts/<name> aliases to their major version.
var nodeLTSCodenames = map[string]string{
	"argon": "4", "boron": "6", "carbon": "8", "dubnium": "10", "erbium": "12",
	"fermium": "14", "gallium": "16", "hydrogen": "18", "iron": "20", "jod": "22",
	"krypton": "24",
}

// nodeVersionFile reads a .nvmrc or .node-version line: "20", "v20.11.1",
// "lts/iron". Aliases that mean "the newest" (node, lts/*, stable) give the
// default, which is the newest LTS we build with.
func nodeVersionFile(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(firstLine(s)))
	s = strings.TrimPrefix(s, "v")
	switch s {
	case "node", "stable", "latest", "current", "lts", "lts/*":
		return defaultNodeVersion, true
	}
	if name, ok := strings.CutPrefix(s, "lts/"); ok {
		v, ok := nodeLTSCodenames[name]
		return v, ok
	}
	if exactVersion.MatchString(s) {
		return s, true
	}
	if m, ok := xRange(s); ok {
		return m, true
	}
	return "", false
}

// nodeEngines turns package.json's engines.node range into a tag: an exact
// version stays exact; a range gives the default major if the range allows it,
// else the highest major it allows (or its lowest bound when unbounded above).
func nodeEngines(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if v := strings.TrimPrefix(s, "v"); exactVersion.MatchString(v) && strings.Count(v, ".") == 2 {
		return v, true
	}
	def, _ := strconv.Atoi(defaultNodeVersion)
	best, found := 0, false
	for _, alt := range strings.Split(s, "||") {
		lo, hi, ok := majorInterval(alt)
		if !ok {
			return "", false
		}
		if lo <= def && def <= hi {
			return defaultNodeVersion, true
		}
		pick := hi
		if hi == math.MaxInt {
			pick = lo
		}
		if !found || pick > best {
			best, found = pick, true
		}
	}
	if !found || best <= 0 {
		return "", false
	}
	return strconv.Itoa(best), true
}

// majorInterval reads one semver range (no "||") as the interval of major
// versions it allows. Minor and patch bounds only matter where they move the
// major: "<21" allows up to 20, "<20.5" allows 20.
func majorInterval(r string) (lo, hi int, ok bool) {
	lo, hi = 0, math.MaxInt
	r = strings.TrimSpace(r)
	if r == "" || r == "*" || r == "x" {
		return lo, hi, true
	}
	if a, b, isHyphen := strings.Cut(r, " - "); isHyphen {
		l, ok1 := major(a)
		h, ok2 := major(b)
		return l, h, ok1 && ok2 && l <= h
	}
	// ">= 18" is written both with and without the space.
	r = rangeOpSpace.ReplaceAllString(r, "$1")
	for _, c := range strings.Fields(r) {
		v := strings.TrimLeft(c, "<>=^~")
		op := c[:len(c)-len(v)]
		v = strings.TrimPrefix(v, "v")
		m, ok := major(v)
		if !ok {
			return 0, 0, false
		}
		_, rest, _ := strings.Cut(v, ".")
		zeroRest := strings.Trim(rest, "0.") == ""
		switch op {
		case ">=", ">":
			lo = max(lo, m)
		case "<":
			if zeroRest {
				hi = min(hi, m-1)
			} else {
				hi = min(hi, m)
			}
		case "<=":
			hi = min(hi, m)
		case "^", "~", "", "=":
			lo, hi = max(lo, m), min(hi, m)
		default:
			return 0, 0, false
		}
	}
	return lo, hi, lo <= hi
}

// major reads the major of "20", "20.11.1", "20.x".
func major(v string) (int, bool) {
	n := leadingNum.FindString(strings.TrimSpace(v))
	if n == "" || len(n) > 4 {
		return 0, false
	}
	m, err := strconv.Atoi(n)
	return m, err == nil
}

// xRange reads "20.x" and "20.*" as "20".
func xRange(s string) (string, bool) {
	for _, suffix := range []string{".x", ".X", ".*"} {
		if m, ok := strings.CutSuffix(s, suffix); ok && exactVersion.MatchString(m) {
			return m, true
		}
	}
	return "", false
}

// rubyVersion reads .ruby-version ("3.3.0", "ruby-3.3.0").
func rubyVersion(s string) (string, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(firstLine(s)), "ruby-")
	if exactVersion.MatchString(s) && strings.Contains(s, ".") {
		return s, true
	}
	return "", false
}

var (
	gemfileRuby     = regexp.MustCompile(`(?m)^\s*ruby\s+["']([^"']+)["']`)
	gemfileLockRuby = regexp.MustCompile(`(?m)^RUBY VERSION\s*\n\s+ruby (\d+\.\d+\.\d+)`)
	versionNumber   = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)
)

// gemfileRubyVersion reads `ruby "3.3.0"` (or "~> 3.3") from a Gemfile.
func gemfileRubyVersion(gemfile []byte) (string, bool) {
	m := gemfileRuby.FindSubmatch(gemfile)
	if m == nil {
		return "", false
	}
	v := versionNumber.FindString(string(m[1]))
	return v, v != ""
}

// gemfileLockRubyVersion reads the RUBY VERSION section of Gemfile.lock.
func gemfileLockRubyVersion(lock []byte) (string, bool) {
	m := gemfileLockRuby.FindSubmatch(lock)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

var (
	goDirective        = regexp.MustCompile(`(?m)^go\s+(1\.\d+)(\.\d+)?\s*(//.*)?$`)
	toolchainDirective = regexp.MustCompile(`(?m)^toolchain\s+go(1\.\d+)(\.\d+)?\S*\s*(//.*)?$`)
)

// goVersion reads the go and toolchain directives of go.mod and returns the
// newer major.minor: the image then has a toolchain that needs no download.
func goVersion(gomod []byte) (string, bool) {
	best := ""
	for _, re := range []*regexp.Regexp{goDirective, toolchainDirective} {
		if m := re.FindSubmatch(gomod); m != nil && newerMinor(string(m[1]), best) {
			best = string(m[1])
		}
	}
	return best, best != ""
}

// newerMinor compares "1.x" versions by their minor.
func newerMinor(a, b string) bool {
	if b == "" {
		return true
	}
	am, _ := strconv.Atoi(strings.TrimPrefix(a, "1."))
	bm, _ := strconv.Atoi(strings.TrimPrefix(b, "1."))
	return am > bm
}

// phpVersion turns composer.json's require.php constraint into a PHP
// major.minor: the default if the constraint allows it (^8.2, >=8.1), else
// the first major.minor it names (8.2.*, ~8.3.0, ^7.4).
func phpVersion(constraint string) (string, bool) {
	c := strings.TrimSpace(constraint)
	first := majorMinor.FindString(c)
	if first == "" {
		return "", false
	}
	dMaj, dMin := splitMajorMinor(defaultPHPVersion)
	for _, alt := range composerOr.Split(c, -1) {
		alt = strings.TrimSpace(alt)
		v := majorMinor.FindString(alt)
		if v == "" {
			continue
		}
		maj, mnr := splitMajorMinor(v)
		switch {
		case strings.HasPrefix(alt, "^") && maj == dMaj && mnr <= dMin,
			strings.HasPrefix(alt, ">=") && !strings.Contains(alt, "<") && (maj < dMaj || maj == dMaj && mnr <= dMin):
			return defaultPHPVersion, true
		}
	}
	return first, true
}

func splitMajorMinor(v string) (int, int) {
	a, b, _ := strings.Cut(v, ".")
	maj, _ := strconv.Atoi(a)
	mnr, _ := strconv.Atoi(leadingNum.FindString(b))
	return maj, mnr
}

// exactSemver matches the versions corepack and bun accept in packageManager.
var exactSemver = regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSuffix(s, "\r")
}
