// Package logwriter is the process each instance's shim starts for its
// output (containerd's binary:// log URI).
//
// It is a package of its own, with nothing but the standard library below
// it, so that its init runs among the first of the zeitwork binary's: the
// writer starts a few milliseconds into the process, before the rest of the
// binary's packages initialize (about 35 ms and 35 MiB of them, paid once
// per instance when the writer lived in internal/runtime).
package logwriter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The log writer: the process each instance's shim starts for its output
// (containerd's binary:// log URI), with the instance's stdout and stderr
// as pipes on fds 3 and 4 and fd 5 to say it is ready. It appends to the
// instance's log file and rotates it the moment the next write would pass
// LogMaxBytes: an instance that writes without pause meets the bound on
// every write, where a check on a timer would let it fill the disk between
// two checks. Rotation is by rename (<id>.log → <id>.log.1, a fresh
// <id>.log), so nothing is lost at the seam, and a reader that holds the
// old file reads it to its end before it moves on.
//
// It is the agent's own executable run again (the reexec pattern): the
// shim starts `<executable> __zeitwork-instance-log <max>:<path>`, and
// this package's init runs the writer before any main. So the zeitwork
// binary, and the test binaries that link this package, are their own
// log writers. The writer belongs to the shim, not the agent, so the logs
// survive the agent as the instances do.

// Arg is the writer's first argument: the binary that links this package
// runs the writer instead of its main when it is started with it.
const Arg = "__zeitwork-instance-log"

func init() {
	if len(os.Args) == 3 && os.Args[1] == Arg {
		if err := run(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "zeitwork instance log writer: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Spec is the writer's second argument: "<max bytes>:<log path>".
func Spec(maxBytes int64, path string) string {
	return strconv.FormatInt(maxBytes, 10) + ":" + path
}

func run(spec string) error {
	maxStr, path, ok := strings.Cut(spec, ":")
	maxBytes, err := strconv.ParseInt(maxStr, 10, 64)
	if !ok || err != nil || maxBytes < 1 || !filepath.IsAbs(path) {
		return fmt.Errorf("argument %q is not <max bytes>:<absolute path>", spec)
	}
	w, err := Open(path, maxBytes)
	if err != nil {
		return err
	}
	defer w.Close()

	stdout, stderr, ready := os.NewFile(3, "stdout"), os.NewFile(4, "stderr"), os.NewFile(5, "ready")
	if stdout == nil || stderr == nil || ready == nil {
		return errors.New("not started by a containerd shim: fds 3, 4 and 5 missing")
	}
	// The shim stops us with SIGTERM once the task is gone and its pipes
	// closed; what is still in them is read before we go.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	var wg sync.WaitGroup
	for _, f := range []*os.File{stdout, stderr} {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					if werr := w.Write(buf[:n]); werr != nil {
						fmt.Fprintf(os.Stderr, "zeitwork instance log writer: %s: %v\n", path, werr)
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
	ready.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-term:
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	return nil
}

// File appends to path and keeps it at most max bytes, moving it to
// path.1 when full.
type File struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

// Open opens (or creates) path for appending, bounded at maxBytes.
func Open(path string, maxBytes int64) (*File, error) {
	w := &File{path: path, max: maxBytes}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *File) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

func (w *File) rotate() error {
	w.f.Close()
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return w.open()
}

// Write appends b, rotating first whenever it would not fit; a piece is
// cut at its last newline that fits, so lines stay whole across files
// unless one is longer than the bound.
func (w *File) Write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) > 0 {
		room := w.max - w.size
		if int64(len(b)) > room {
			if i := bytes.LastIndexByte(b[:max(room, 0)], '\n'); i >= 0 {
				room = int64(i + 1)
			} else if w.size > 0 {
				room = 0 // start the line in a fresh file
			}
		}
		if room <= 0 {
			if err := w.rotate(); err != nil {
				return err
			}
			continue
		}
		n := min(int64(len(b)), room)
		m, err := w.f.Write(b[:n])
		w.size += int64(m)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// Close closes the file.
func (w *File) Close() { w.f.Close() }

// Name is the writer alone's executable (cmd/zeitwork-logwriter), looked
// for next to the zeitwork binary.
const Name = "zeitwork-logwriter"

// Executable is this process's executable, a log writer itself.
func Executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(exe)
}

// Beside is what the shims run as the log writer for the zeitwork binary
// exe: Name where it lies next to exe and can be run, else exe itself.
// Both write the same; the writer alone starts in about 1 ms of CPU where
// the zeitwork binary, which initializes some 200 packages and maps a
// larger program first, takes about 7 (perf stat), once per instance
// start. Looked for at each start, so that one installed beside a running
// agent is used without a restart.
func Beside(exe string) string {
	alone := filepath.Join(filepath.Dir(exe), Name)
	if fi, err := os.Stat(alone); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return alone
	}
	return exe
}
