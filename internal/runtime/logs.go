package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/uuid"
)

// Instance logs are plain files written by the log writer, a process of
// the shim's (logwriter.go), which rotates <id>.log to <id>.log.1 by
// rename the moment it is full; or, with Config.LogWriter "none", by the
// shim itself (containerd's file:// log URI). Either way no pipe or FIFO
// leads through the agent's process, which is what makes them survive it.
// Without the writer the agent can only bound them from outside,
// copytruncate-style, every LogCheckInterval: when <id>.log is over
// LogMaxBytes it is copied to <id>.log.1 and truncated in place, and the
// shim's O_APPEND writes go on at the new end. That is also the backstop
// for instances started before the writer existed.
//
// A reader notices the writer's renames by the file under <id>.log no
// longer being the one it holds (followRename). The copytruncate rotation
// lives in the reader's process, so for it readers coordinate through a
// generation counter per log rather than guessing from file sizes: a reader checks the generation under the log's lock before every
// read, and when it moved on, it finishes the rotated generation from
// <id>.log.1 at the offset it had reached, then starts the new one at zero.

// followPoll is how often a following reader looks for new output. A
// follower misses output only if two rotations happen between two of its
// looks, and rotations are at least LogCheckInterval apart.
const followPoll = 100 * time.Millisecond

// logState coordinates the rotation of one instance's log with its readers.
type logState struct {
	mu  sync.Mutex
	gen uint64 // rotations so far, in this process
}

func (r *Runtime) logPath(id uuid.UUID) string {
	return filepath.Join(r.logDir, id.String()+".log")
}

func (r *Runtime) logState(id uuid.UUID) *logState {
	r.logsMu.Lock()
	defer r.logsMu.Unlock()
	st, ok := r.logs[id]
	if !ok {
		st = &logState{}
		r.logs[id] = st
	}
	return st
}

func (r *Runtime) forgetLog(id uuid.UUID) {
	r.logsMu.Lock()
	defer r.logsMu.Unlock()
	delete(r.logs, id)
}

func (r *Runtime) rotateLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.LogCheckInterval)
	defer t.Stop()
	for {
		r.maintainLogs(ctx)
		if r.cfg.DiskLimitMB > 0 {
			r.enforceDiskLimit(ctx)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// maintainLogs rotates the logs that are over their bound and deletes those
// of instances removed more than LogRetention ago.
func (r *Runtime) maintainLogs(ctx context.Context) {
	entries, err := os.ReadDir(r.logDir)
	if err != nil {
		r.log.WarnContext(ctx, "read log directory", "error", err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		base, suffix, ok := strings.Cut(name, ".log")
		id, err := uuid.Parse(base)
		if !ok || err != nil || (suffix != "" && suffix != ".1") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		path := filepath.Join(r.logDir, name)
		if time.Since(info.ModTime()) > r.cfg.LogRetention {
			if _, err := r.client.ContainerService().Get(ctx, id.String()); errdefs.IsNotFound(err) {
				if err := os.Remove(path); err == nil {
					if suffix == "" {
						r.forgetLog(id)
					}
					r.log.InfoContext(ctx, "removed the log of a removed instance", "instance_id", id, "file", name)
				}
				continue
			}
		}
		if suffix == "" && info.Size() > r.cfg.LogMaxBytes {
			st := r.logState(id)
			st.mu.Lock()
			err := rotate(path)
			if err == nil {
				st.gen++
			}
			st.mu.Unlock()
			if err != nil {
				r.log.WarnContext(ctx, "rotate instance log", "instance_id", id, "error", err)
			}
		}
	}
}

// rotate copies path to path.1 (replacing it) and truncates path.
func rotate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rotate-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		return err
	}
	// What the shim appended during the copy: catch up, then truncate at
	// once. Only what lands between these two steps is lost.
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		return err
	}
	if err := f.Truncate(0); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path+".1")
}

// Logs returns the instance's output: the previous generation, then the
// current one. With follow, the reader keeps returning new output as it is
// written, across rotations and restarts of the instance, until ctx ends,
// the reader is closed, or the instance is removed (then it returns what
// is left, then io.EOF). Logs of a removed instance stay readable for
// LogRetention.
func (r *Runtime) Logs(ctx context.Context, id uuid.UUID, follow bool) (io.ReadCloser, error) {
	path := r.logPath(id)
	st := r.logState(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	// The previous generation first: the writer renames <id>.log to
	// <id>.log.1, so what is opened second is never older than what was
	// opened first.
	old, oldErr := os.Open(path + ".1")
	cur, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		status, serr := r.Status(ctx, id)
		if serr != nil {
			return nil, fmt.Errorf("logs %s: %w", id, serr)
		}
		if status.State == StateMissing {
			return nil, fmt.Errorf("logs %s: %w", id, ErrNotFound)
		}
		// Created but never started: nothing written yet.
		cur, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o640)
	}
	if err != nil {
		if oldErr == nil {
			old.Close()
		}
		return nil, fmt.Errorf("logs %s: %w", id, err)
	}
	lr := &logReader{
		path:   path,
		state:  st,
		gen:    st.gen,
		cur:    cur,
		follow: follow,
		ctx:    ctx,
		done:   make(chan struct{}),
		gone: func() bool {
			_, err := r.client.ContainerService().Get(r.ns(ctx), id.String())
			return errdefs.IsNotFound(err)
		},
	}
	if oldErr == nil {
		lr.prev = rotatedBefore(old, cur, path+".1")
	}
	return lr, nil
}

// rotatedBefore is what to read before cur, given old, the file that was
// <id>.log.1 just before cur was opened: old, unless the writer rotated
// in between (old is then one generation further back than the one before
// cur, which is at <id>.log.1 now, unless cur itself is, having rotated
// once more). Generations rotated away entirely are lost, as the bound
// wants.
func rotatedBefore(old, cur *os.File, prevPath string) []*os.File {
	oi, oerr := old.Stat()
	ci, cerr := cur.Stat()
	if oerr != nil || cerr != nil {
		old.Close()
		return nil
	}
	mid, err := os.Open(prevPath)
	if err != nil {
		return []*os.File{old}
	}
	mi, err := mid.Stat()
	switch {
	case err != nil || os.SameFile(mi, oi):
		mid.Close() // no rotation in between
		return []*os.File{old}
	case os.SameFile(mi, ci):
		mid.Close() // cur rotated: old is right before it
		return []*os.File{old}
	case !stillAt(strings.TrimSuffix(prevPath, ".1"), ci):
		// cur rotated away after it was opened: mid may be a generation
		// after it, which must not be read before it. Drop mid whole.
		mid.Close()
		return []*os.File{old}
	default:
		return []*os.File{old, mid}
	}
}

// stillAt reports whether path is still the file fi was taken of: the
// writer has not rotated it away since.
func stillAt(path string, fi os.FileInfo) bool {
	pi, err := os.Stat(path)
	return err == nil && os.SameFile(pi, fi)
}

type logReader struct {
	path   string
	state  *logState
	follow bool
	ctx    context.Context
	gone   func() bool // the instance has been removed

	mu        sync.Mutex
	gen       uint64     // generation cur is in
	prev      []*os.File // earlier generations still to read, oldest first
	cur       *os.File   // <id>.log: the same inode across rotations
	off       int64      // bytes of the current generation read
	lastCheck time.Time
	draining  bool // instance removed: read to the end once more, then stop

	done      chan struct{}
	closeOnce sync.Once
}

func (l *logReader) Read(p []byte) (int, error) {
	for {
		l.mu.Lock()
		n, err, wait := l.readLocked(p)
		l.mu.Unlock()
		if !wait {
			return n, err
		}
		select {
		case <-time.After(followPoll):
		case <-l.done:
			return 0, io.EOF
		case <-l.ctx.Done():
			return 0, io.EOF
		}
	}
}

// readLocked returns data or an error, or asks the caller to wait and retry.
func (l *logReader) readLocked(p []byte) (n int, err error, wait bool) {
	select {
	case <-l.done:
		return 0, io.EOF, false
	default:
	}
	for {
		for len(l.prev) > 0 {
			n, err := l.prev[0].Read(p)
			if n > 0 {
				return n, nil, false
			}
			l.prev[0].Close()
			l.prev = l.prev[1:]
			if err != nil && err != io.EOF {
				return 0, err, false
			}
		}
		n, err = l.readCurrent(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err, false
		}
		if len(l.prev) == 0 {
			break
		}
		// A rotation queued the rest of our generation: read it now.
	}
	if !l.follow || l.draining {
		return 0, io.EOF, false
	}
	if time.Since(l.lastCheck) > time.Second {
		l.lastCheck = time.Now()
		if l.gone() {
			// Removed: whatever the shim wrote before it went is in the
			// file already. One more pass, then the end.
			l.draining = true
			n, err := l.readCurrent(p)
			if n > 0 || (err != nil && err != io.EOF) {
				return n, err, false
			}
			return 0, io.EOF, false
		}
	}
	return 0, nil, true
}

// readCurrent reads the live file, first catching up with rotations: the
// rest of the generation it was reading is in <id>.log.1 at the same
// offset (if it was rotated once since; after more, the generations in
// between are gone and it resumes with the latest).
func (l *logReader) readCurrent(p []byte) (int, error) {
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	if l.state.gen != l.gen {
		if old, err := os.Open(l.path + ".1"); err == nil {
			if l.state.gen == l.gen+1 {
				_, err = old.Seek(l.off, io.SeekStart)
			}
			if err == nil {
				l.prev = append(l.prev, old)
			} else {
				old.Close()
			}
		}
		if _, err := l.cur.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		l.gen, l.off = l.state.gen, 0
		return 0, io.EOF
	}
	n, err := l.cur.Read(p)
	l.off += int64(n)
	if n == 0 && err == io.EOF {
		l.followRename()
	}
	return n, err
}

// followRename moves on when the log writer has rotated by rename: the
// file we hold is then <id>.log.1 (or gone, if it rotated twice), and
// <id>.log a new file. What was written to ours after our last read is
// still in it, so it is queued to be read to its end, then <id>.log.1 if
// that is a generation in between, then the new file from its start.
//
// The writer goes on rotating meanwhile, so what is compared is what was
// opened, in the order the writer moves files: <id>.log first, then
// <id>.log.1, which is then ours, the one in between, or the one just
// opened (if the writer rotated again in between: nothing lies between).
func (l *logReader) followRename() {
	ci, err := l.cur.Stat()
	if err != nil {
		return
	}
	if fi, err := os.Stat(l.path); err != nil || os.SameFile(fi, ci) {
		return
	}
	if beforeReopen != nil {
		beforeReopen()
	}
	next, err := os.Open(l.path)
	if err != nil {
		return
	}
	ni, err := next.Stat()
	if err != nil || os.SameFile(ni, ci) {
		next.Close()
		return
	}
	l.prev = append(l.prev, l.cur)
	if beforeOpenPrev != nil {
		beforeOpenPrev()
	}
	if mid, err := os.Open(l.path + ".1"); err == nil {
		// mid lies between ours and next only if next was not rotated
		// away meanwhile; otherwise it may come after next, and is
		// dropped whole rather than read out of order.
		if mi, err := mid.Stat(); err == nil && !os.SameFile(mi, ci) && !os.SameFile(mi, ni) && stillAt(l.path, ni) {
			l.prev = append(l.prev, mid)
		} else {
			mid.Close()
		}
	}
	l.cur, l.off = next, 0
}

// beforeReopen, when set (by tests), runs when a reader has seen the log
// rotated and before it opens the new one: where the writer can rotate
// again.
var beforeReopen func()

// beforeOpenPrev, when set (by tests), runs when a reader has opened the
// new log and before it looks at <id>.log.1: where the writer can rotate
// the new one away.
var beforeOpenPrev func()

func (l *logReader) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, f := range l.prev {
			f.Close()
		}
		l.prev = nil
		err = l.cur.Close()
	})
	return err
}
