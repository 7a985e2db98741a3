package logs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// Source says where a line comes from.
type Source string

const (
	SourceBuild   Source = "build"
	SourceRuntime Source = "runtime"
)

// Output is the stream of runtime lines: the node captures an instance's
// stdout and stderr in one file, interleaved as written, and cannot tell
// them apart afterwards.
const Output buildlog.Stream = "output"

// Streams are every stream a line can be on.
var Streams = []buildlog.Stream{buildlog.Stdout, buildlog.Stderr, buildlog.System, Output}

// ErrTimeFilter: a time filter was asked of runtime lines, which carry no
// time.
var ErrTimeFilter = errors.New("runtime lines carry no time (the node keeps the raw output): since and until apply to the build log only")

// Line is one line of a deployment's log.
type Line struct {
	// ID names the line within its source: the build line's UUIDv7, or
	// <instance>.<offset of its first byte>.
	ID         string
	Source     Source
	InstanceID uuid.UUID // runtime lines only
	Stream     buildlog.Stream
	At         time.Time // zero for runtime lines
	Text       string
}

// Missing is an instance whose log could not be read: its node is down
// or does not answer.
type Missing struct {
	InstanceID uuid.UUID
	NodeID     uuid.UUID
	Detail     string
}

// Query says which lines to read.
type Query struct {
	DeploymentID   uuid.UUID
	Build, Runtime bool
	// Since and Until bound build lines' times (Until exclusive); zero:
	// unbounded.
	Since, Until time.Time
	After        Cursor
}

func (q Query) validate() error {
	if q.Runtime && (!q.Since.IsZero() || !q.Until.IsZero()) {
		return ErrTimeFilter
	}
	return nil
}

func (q Query) inTime(at time.Time) bool {
	return (q.Since.IsZero() || !at.Before(q.Since)) && (q.Until.IsZero() || at.Before(q.Until))
}

// Reader reads deployments' logs.
type Reader struct {
	Pool  *pgxpool.Pool
	Nodes Nodes
	// Poll is how often a follow looks for new instances and whether the
	// deployment finished, and how soon it retries a node that is down.
	Poll time.Duration
	Log  *slog.Logger
	// Hub shares one listening connection among the build logs followed;
	// nil: the Reader makes its own on first use.
	Hub *buildlog.Hub

	hubOnce sync.Once
}

// maxLine cuts runtime lines: an instance that never writes a newline
// must not make a line without bound.
const maxLine = 16 << 10

// Page is what Read found.
type Page struct {
	Lines   []Line
	Missing []Missing
	Next    Cursor // after the last line; hand it back for more
	More    bool   // the limit cut the page short
}

// Read returns up to limit lines after q.After: the build log first, then
// each instance's, oldest instance first. A node that does not answer
// makes its instances Missing, not an error.
func (r *Reader) Read(ctx context.Context, q Query, limit int) (Page, error) {
	if err := q.validate(); err != nil {
		return Page{}, err
	}
	p := Page{Next: q.After.clone()}
	if q.Build {
		builds, err := db.New(r.Pool).BuildListByDeployment(ctx, q.DeploymentID)
		if err != nil {
			return Page{}, fmt.Errorf("builds of %s: %w", q.DeploymentID, err)
		}
		for _, b := range builds {
			for len(p.Lines) < limit {
				lines, err := buildlog.Page(ctx, db.New(r.Pool), b.ID, p.Next.Builds[b.ID], min(limit-len(p.Lines), 1000))
				if err != nil {
					return Page{}, err
				}
				for _, l := range lines {
					p.Next.Builds[b.ID] = l.ID
					if q.inTime(l.At) {
						p.Lines = append(p.Lines, buildLine(l))
					}
				}
				if len(lines) == 0 {
					break
				}
			}
		}
	}
	if q.Runtime {
		ins, err := r.instances(ctx, q.DeploymentID)
		if err != nil {
			return Page{}, err
		}
		nodes := map[uuid.UUID]node.Node{}
		for _, in := range ins {
			if len(p.Lines) >= limit {
				break
			}
			err := r.readInstance(ctx, nodes, in, p.Next.Instances[in.ID], func(l Line, next int64) bool {
				p.Lines = append(p.Lines, l)
				p.Next.Instances[in.ID] = next
				return len(p.Lines) < limit
			})
			var m *missingError
			if errors.As(err, &m) {
				p.Missing = append(p.Missing, m.Missing)
				continue
			}
			if err != nil {
				return Page{}, err
			}
		}
	}
	p.More = len(p.Lines) >= limit
	return p, nil
}

func buildLine(l buildlog.Line) Line {
	return Line{ID: l.ID.String(), Source: SourceBuild, Stream: l.Stream, At: l.At, Text: l.Text}
}

// instances are a deployment's instances, oldest first.
func (r *Reader) instances(ctx context.Context, dep uuid.UUID) ([]instance.Instance, error) {
	ins, err := instance.Store{DB: r.Pool}.List(ctx, instance.Filter{DeploymentID: &dep, Limit: 500})
	if err != nil {
		return nil, err
	}
	slices.Reverse(ins)
	return ins, nil
}

type missingError struct{ Missing }

func (m *missingError) Error() string { return m.Detail }

// readInstance hands fn in's lines from offset from, with the offset
// after each, until fn says stop or the node's log ends.
func (r *Reader) readInstance(ctx context.Context, nodes map[uuid.UUID]node.Node, in instance.Instance, from int64, fn func(l Line, next int64) bool) error {
	n, ok := nodes[in.NodeID]
	if !ok {
		var err error
		if n, err = (node.Store{DB: r.Pool}).Get(ctx, in.NodeID); err != nil {
			return fmt.Errorf("node of instance %s: %w", in.ID, err)
		}
		nodes[in.NodeID] = n
	}
	body, start, err := r.Nodes.open(ctx, n, in.ID, from, false)
	if errors.Is(err, errNoLogs) {
		return nil // nothing to show, nothing lost: it never ran, or long ago
	}
	if err != nil {
		r.Log.WarnContext(ctx, "instance log unreadable", "instance_id", in.ID, "node_id", n.ID, "err", err)
		return &missingError{missing(in, n)}
	}
	defer body.Close()
	if start != from && !fn(rotated(in.ID, start), start) {
		return nil
	}
	_, err = scanLines(body, in.ID, start, fn)
	if err != nil && ctx.Err() == nil {
		r.Log.WarnContext(ctx, "instance log cut off", "instance_id", in.ID, "node_id", n.ID, "err", err)
		return &missingError{missing(in, n)}
	}
	return ctx.Err()
}

func missing(in instance.Instance, n node.Node) Missing {
	return Missing{InstanceID: in.ID, NodeID: n.ID, Detail: fmt.Sprintf("the log of instance %s is unavailable: its node %s did not answer", in.ID, n.Hostname)}
}

// rotated is the line that says a runtime log starts over.
func rotated(inst uuid.UUID, at int64) Line {
	return Line{ID: runtimeID(inst, at), Source: SourceRuntime, InstanceID: inst, Stream: buildlog.System,
		Text: "the node rotated this instance's log since the last read; resuming from the oldest line it keeps"}
}

func runtimeID(inst uuid.UUID, off int64) string {
	return inst.String() + "." + strconv.FormatInt(off, 10)
}

// scanLines hands fn each line of body, which starts at offset start of
// the instance's log, with the offset after it, until fn says stop or the
// body ends (its last bytes as a line, newline or not). It returns whether
// the body ended.
func scanLines(body io.Reader, inst uuid.UUID, start int64, fn func(l Line, next int64) bool) (bool, error) {
	br := bufio.NewReaderSize(body, maxLine)
	off := start
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && (err == nil || errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF)) {
			text := string(chunk)
			if n := len(text); n > 0 && text[n-1] == '\n' {
				text = text[:n-1]
				if m := len(text); m > 0 && text[m-1] == '\r' {
					text = text[:m-1]
				}
			}
			l := Line{ID: runtimeID(inst, off), Source: SourceRuntime, InstanceID: inst, Stream: Output, Text: text}
			off += int64(len(chunk))
			if !fn(l, off) {
				return false, nil
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return true, nil
		default:
			return false, err
		}
	}
}

// buildEnded says whether a build has stopped writing.
func buildEnded(s build.Status) bool {
	return s == build.StatusSucceeded || s == build.StatusFailed || s == build.StatusCancelled
}
