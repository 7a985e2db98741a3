package logs

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// ErrBadCursor: a cursor that this package did not write.
var ErrBadCursor = errors.New("not a log cursor")

// Cursor is how far a reader got in every source of a deployment's log.
// Its zero value is the start of everything.
type Cursor struct {
	// Builds maps a build to the id of its last line read.
	Builds map[uuid.UUID]uuid.UUID
	// Instances maps an instance to the offset of the next byte to read
	// of its log, as its node serves it.
	Instances map[uuid.UUID]int64
}

func (c Cursor) clone() Cursor {
	return Cursor{Builds: cloneMap(c.Builds), Instances: cloneMap(c.Instances)}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}

// String is the cursor as text fit for a URL and an SSE id:
// b.<build>.<line>~i.<instance>.<offset>…, sorted, "" for the start.
func (c Cursor) String() string {
	var parts []string
	for b, l := range c.Builds {
		parts = append(parts, "b."+b.String()+"."+l.String())
	}
	for i, off := range c.Instances {
		parts = append(parts, "i."+i.String()+"."+strconv.FormatInt(off, 10))
	}
	slices.Sort(parts)
	return strings.Join(parts, "~")
}

// maxCursorParts bounds what a client can make the server parse: a
// deployment has a few builds and a few instances.
const maxCursorParts = 1000

// ParseCursor reads what String wrote.
func ParseCursor(s string) (Cursor, error) {
	c := Cursor{Builds: map[uuid.UUID]uuid.UUID{}, Instances: map[uuid.UUID]int64{}}
	if s == "" {
		return c, nil
	}
	parts := strings.Split(s, "~")
	if len(parts) > maxCursorParts {
		return Cursor{}, fmt.Errorf("%w: too long", ErrBadCursor)
	}
	for _, p := range parts {
		kind, rest, _ := strings.Cut(p, ".")
		key, pos, ok := strings.Cut(rest, ".")
		src, err := uuid.Parse(key)
		if !ok || err != nil || len(key) != 36 {
			return Cursor{}, fmt.Errorf("%w: %q", ErrBadCursor, p)
		}
		switch kind {
		case "b":
			line, err := uuid.Parse(pos)
			if err != nil || len(pos) != 36 {
				return Cursor{}, fmt.Errorf("%w: %q", ErrBadCursor, p)
			}
			c.Builds[src] = line
		case "i":
			off, err := strconv.ParseInt(pos, 10, 64)
			if err != nil || off < 0 {
				return Cursor{}, fmt.Errorf("%w: %q", ErrBadCursor, p)
			}
			c.Instances[src] = off
		default:
			return Cursor{}, fmt.Errorf("%w: %q", ErrBadCursor, p)
		}
	}
	return c, nil
}
