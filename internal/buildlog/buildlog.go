// Package buildlog stores a build's output as it happens and lets readers
// follow it live. Builders write through a Writer, which batches lines into
// build_logs (one COPY per flush, not one INSERT per line), bounds the total
// a build may store, and wakes followers with NOTIFY; readers page by the
// lines' UUIDv7 ids, so "give me what came after line X" is one index scan.
package buildlog

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

// Stream names where a line came from.
type Stream string

const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
	// System lines are Zeitwork's own: "detected Next.js", "pushing image".
	System Stream = "system"
)

// Limits bound what one build may store and how often it is flushed.
type Limits struct {
	MaxBytes      int           // total bytes stored per build; the rest is dropped with a notice
	MaxLineBytes  int           // longer lines are cut
	FlushInterval time.Duration // how stale a follower's view may get
	FlushLines    int           // flush early when this many lines are waiting
}

// DefaultLimits suit a build: a few MiB is far more than anyone reads, and a
// quarter of a second feels live.
var DefaultLimits = Limits{MaxBytes: 4 << 20, MaxLineBytes: 8 << 10, FlushInterval: 250 * time.Millisecond, FlushLines: 500}

// Writer collects one build's output. It is safe for concurrent use; each
// stream's partial last line is kept until its newline arrives or Close.
type Writer struct {
	pool    *pgxpool.Pool
	buildID uuid.UUID
	lim     Limits
	log     *slog.Logger

	mu        sync.Mutex
	pending   []db.BuildLogCopyParams
	partial   map[Stream]*bytes.Buffer
	stored    int
	truncated bool
	err       error // first flush error; later writes keep buffering nothing

	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// NewWriter starts a writer for buildID that flushes in the background until Close.
func NewWriter(pool *pgxpool.Pool, buildID uuid.UUID, lim Limits, log *slog.Logger) *Writer {
	w := &Writer{
		pool: pool, buildID: buildID, lim: lim, log: log,
		partial: map[Stream]*bytes.Buffer{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	w.wg.Add(1)
	go w.loop()
	return w
}

// Stream returns an io.Writer for one stream, e.g. to hand to BuildKit's
// progress printer.
func (w *Writer) Stream(s Stream) *StreamWriter { return &StreamWriter{w: w, s: s} }

// StreamWriter writes raw bytes to one stream of a Writer.
type StreamWriter struct {
	w *Writer
	s Stream
}

func (sw *StreamWriter) Write(p []byte) (int, error) {
	sw.w.write(sw.s, p)
	return len(p), nil
}

// Line adds one complete line.
func (w *Writer) Line(s Stream, format string, args ...any) {
	w.write(s, []byte(fmt.Sprintf(format, args...)+"\n"))
}

func (w *Writer) write(s Stream, p []byte) {
	w.mu.Lock()
	buf := w.partial[s]
	if buf == nil {
		buf = &bytes.Buffer{}
		w.partial[s] = buf
	}
	buf.Write(p)
	for {
		i := bytes.IndexByte(buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(buf.Next(i+1), "\r\n"))
		w.addLocked(s, line)
	}
	// A runaway line with no newline must not grow without bound.
	if buf.Len() > w.lim.MaxLineBytes {
		w.addLocked(s, buf.String())
		buf.Reset()
	}
	full := len(w.pending) >= w.lim.FlushLines
	w.mu.Unlock()
	if full {
		w.wake()
	}
}

func (w *Writer) addLocked(s Stream, line string) {
	if w.truncated {
		return
	}
	if len(line) > w.lim.MaxLineBytes {
		line = truncateUTF8(line, w.lim.MaxLineBytes) + " …[line truncated]"
	}
	if w.stored+len(line) > w.lim.MaxBytes {
		w.truncated = true
		line = fmt.Sprintf("log limit of %d bytes reached; further output is not stored", w.lim.MaxBytes)
		s = System
	}
	w.stored += len(line)
	w.pending = append(w.pending, db.BuildLogCopyParams{ID: id.New(), BuildID: w.buildID, Stream: string(s), Line: line})
}

func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *Writer) loop() {
	defer w.wg.Done()
	t := time.NewTicker(w.lim.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
		case <-w.kick:
		}
		w.flush(context.Background())
	}
}

func (w *Writer) flush(ctx context.Context) {
	w.mu.Lock()
	batch := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q := db.New(w.pool)
	if _, err := q.BuildLogCopy(ctx, batch); err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
			// Logs are worth keeping, not worth failing a build over.
			w.log.WarnContext(ctx, "build log flush failed; lines dropped", "build_id", w.buildID, "lines", len(batch), "err", err)
		}
		w.mu.Unlock()
		return
	}
	if err := q.BuildLogNotify(ctx, w.buildID.String()); err != nil {
		w.log.WarnContext(ctx, "build log notify failed", "build_id", w.buildID, "err", err)
	}
}

// Close stores what is left, partial lines included, and stops the writer.
// It returns the first error storing lines met, if any; closing again
// returns the same.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() { w.closeErr = w.close(ctx) })
	return w.closeErr
}

func (w *Writer) close(ctx context.Context) error {
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	for _, s := range []Stream{System, Stdout, Stderr} {
		if buf := w.partial[s]; buf != nil && buf.Len() > 0 {
			w.addLocked(s, buf.String())
			buf.Reset()
		}
	}
	w.mu.Unlock()
	w.flush(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
