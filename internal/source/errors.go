package source

import (
	"errors"
	"fmt"
)

// The reasons an archive is refused. They are sentinels so that the builder
// can tell a user's bad archive (show it, fail the build) from an
// infrastructure error (retry); match them with errors.Is.
var (
	// ErrUnsafePath: an entry's path, or a link's target, would leave the
	// build context.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrUnsupportedEntry: a device, fifo or other entry that has no place
	// in a build context.
	ErrUnsupportedEntry = errors.New("unsupported entry type")
	// ErrTooLarge: a file, or the archive as a whole, is over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrTooManyFiles: the archive has more entries than allowed.
	ErrTooManyFiles = errors.New("too many files")
	// ErrInvalidArchive: the bytes are not a (gzip'd) tar, or entries
	// contradict each other.
	ErrInvalidArchive = errors.New("invalid archive")
	// ErrNotFound: the uploaded archive, the root directory or the file
	// asked for does not exist.
	ErrNotFound = errors.New("not found")
)

// EntryError names the archive entry that was refused, so a user can find
// it in their repository.
type EntryError struct {
	Name string // as written in the archive
	Err  error  // wraps one of the sentinels above, or a filesystem error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("archive entry %q: %v", e.Name, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(name string, kind error, format string, args ...any) error {
	return &EntryError{Name: name, Err: fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))}
}
