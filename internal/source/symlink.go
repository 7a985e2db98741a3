package source

import (
	"fmt"
	"strings"
)

// maxLinkHops is well above the kernel's 40, so that any chain the kernel
// would follow is checked to its end; longer chains are refused as loops.
const maxLinkHops = 255

// linkCheckBudget bounds the work of checking all symlinks (bytes of path
// looked up), so that a crafted archive of many deep links cannot keep a
// builder busy. Real repositories use a tiny fraction of it.
const linkCheckBudget = 256 << 20

// linkChecker checks symlinks against the final tree. links holds every
// symlink in it (final paths → targets); everything else is a regular file
// or a directory Unpack created, so the walk needs no filesystem.
type linkChecker struct {
	links  map[string]string
	budget int
}

// resolveInside checks that following the symlink at name stays inside the
// tree, the way the kernel would follow it: component by component, each
// ".." applied to the directory actually reached, through every symlink of
// the archive on the way. A lexical check of each link alone is not enough:
// with a/b/s -> ../.. (the root), the link t -> a/b/s/.. reads as a/b but
// really climbs above the root. A component that does not exist is walked
// through as if it were a directory, which can only refuse more.
func (lc *linkChecker) resolveInside(name string) error {
	target := lc.links[name]
	// cur is the directory reached: a slash path below the root, and where
	// each of its components starts, so ".." is cheap.
	var cur []byte
	var starts []int
	push := func(c string) {
		starts = append(starts, len(cur))
		if len(cur) > 0 {
			cur = append(cur, '/')
		}
		cur = append(cur, c...)
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		for c := range strings.SplitSeq(name[:i], "/") {
			push(c)
		}
	}
	todo := strings.Split(target, "/")
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(starts) == 0 {
				return fmt.Errorf("%w: symlink to %q leaves the build context", ErrUnsafePath, target)
			}
			cur, starts = cur[:starts[len(starts)-1]], starts[:len(starts)-1]
			continue
		}
		push(c)
		if lc.budget -= len(cur); lc.budget < 0 {
			return fmt.Errorf("%w: too many or too deep symlinks to check", ErrInvalidArchive)
		}
		t, ok := lc.links[string(cur)]
		if !ok {
			continue
		}
		if hops++; hops > maxLinkHops {
			return fmt.Errorf("%w: symlink to %q is part of a loop", ErrUnsafePath, target)
		}
		if strings.HasPrefix(t, "/") {
			return fmt.Errorf("%w: symlink to %q leads to an absolute path", ErrUnsafePath, target)
		}
		cur, starts = cur[:starts[len(starts)-1]], starts[:len(starts)-1]
		todo = append(strings.Split(t, "/"), todo...)
	}
	return nil
}

// underAny reports the symlink in links that name lies under (a proper
// ancestor of name).
func underAny(links map[string]string, name string) (string, bool) {
	for p := name; ; {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return "", false
		}
		p = p[:i]
		if _, ok := links[p]; ok {
			return p, true
		}
	}
}
