package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/logs"
)

// Logs is what the log operation needs.
type Logs struct {
	// Reader reads build_logs and the node APIs; nil: the route answers
	// 503.
	Reader *logs.Reader
	// KeepAlive is how long a live stream stays silent before it sends a
	// comment, so that proxies do not close it; 0: 15s.
	KeepAlive time.Duration
}

// sseWriteTimeout bounds one write to a live stream: a client that stops
// reading must not hold its stream's goroutines for ever.
const sseWriteTimeout = 10 * time.Second

// maxLogPage bounds a JSON page; the build log alone stores up to 4 MiB.
const maxLogPage = 5000

func (a *API) registerLogs(api huma.API) {
	reg := api.OpenAPI().Components.Schemas
	huma.Register(api, huma.Operation{
		OperationID: "get-deployment-logs", Method: http.MethodGet, Path: "/v1/deployments/{id}/logs", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "A deployment's logs",
		Description: "The build log and the output of every instance, read from the nodes they run on. " +
			"As JSON (the default): a page of lines; `next_cursor` reads on after it, also after the last page, when new lines come. " +
			"With `Accept: text/event-stream`: the lines so far, then live ones as Server-Sent Events (`line`; `missing` when an instance's node does not answer), " +
			"with a comment every 15 s on a quiet stream, until the deployment is finished (stopped or failed; with `source=build`, until its build ended), then `end`. " +
			"Each event's id is a cursor: a client that reconnects with `Last-Event-ID` (or `cursor`) resumes every source exactly after what it saw. " +
			"Runtime offsets count from the oldest byte a node keeps; when a node rotated an instance's log in between, the stream says so with a `system` line and resumes from the oldest line kept.",
		Responses: map[string]*huma.Response{"200": {
			Description: "The lines",
			Content: map[string]*huma.MediaType{
				"application/json":  {Schema: reg.Schema(reflect.TypeOf(LogPage{}), true, "LogPage")},
				"text/event-stream": {Schema: &huma.Schema{Type: huma.TypeString, Description: "Server-Sent Events: `line` (data: a LogLine), `missing` (data: a LogMissing), `end` (data: the deployment's status), `error` (the stream failed: reconnect to resume); ids are cursors."}},
			},
		}},
	}, a.deploymentLogs)
}

// LogLine is one line of a deployment's log.
type LogLine struct {
	ID         string     `json:"id" doc:"the line's id within its source: a UUIDv7 for build lines, <instance_id>.<byte offset> for runtime lines"`
	Source     logSource  `json:"source"`
	InstanceID *uuid.UUID `json:"instance_id,omitempty" format:"uuid" doc:"the instance that wrote a runtime line"`
	Stream     logStream  `json:"stream" doc:"stdout, stderr or system for build lines; output for runtime lines (the node captures stdout and stderr together), system for the platform's notes"`
	Timestamp  *time.Time `json:"timestamp" doc:"when a build line was stored; null for runtime lines, whose node keeps no time"`
	Text       string     `json:"text"`
}

// LogMissing is an instance whose log could not be read.
type LogMissing struct {
	InstanceID uuid.UUID `json:"instance_id" format:"uuid"`
	NodeID     uuid.UUID `json:"node_id" format:"uuid"`
	Detail     string    `json:"detail"`
}

// LogPage is a page of a deployment's log.
type LogPage struct {
	Items      []LogLine    `json:"items"`
	Missing    []LogMissing `json:"missing" doc:"instances whose node did not answer: their lines are not in this page"`
	NextCursor string       `json:"next_cursor" doc:"where the next read starts"`
	More       bool         `json:"more" doc:"the limit cut this page short: read on at once"`
}

type (
	logSource string
	logStream string
)

func (logSource) Schema(huma.Registry) *huma.Schema {
	return enumSchema([]logs.Source{logs.SourceBuild, logs.SourceRuntime})
}

func (logStream) Schema(huma.Registry) *huma.Schema { return enumSchema(logs.Streams) }

type logsInput struct {
	ID          string    `path:"id"`
	Source      string    `query:"source" enum:"build,runtime" doc:"only this source; both when absent"`
	Since       time.Time `query:"since" doc:"build lines stored at or after this time (RFC 3339); needs source=build"`
	Until       time.Time `query:"until" doc:"build lines stored before this time; needs source=build"`
	Cursor      string    `query:"cursor" doc:"next_cursor of a page, or an event's id: read on after it"`
	Limit       int       `query:"limit" minimum:"1" maximum:"5000" default:"1000" doc:"at most this many lines (JSON only)"`
	Accept      string    `header:"Accept"`
	LastEventID string    `header:"Last-Event-ID" doc:"the id of the last event a reconnecting client saw; wins over cursor"`
}

func (a *API) deploymentLogs(ctx context.Context, in *logsInput) (*huma.StreamResponse, error) {
	v, err := a.visibleDeployment(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	if a.Logs.Reader == nil {
		return nil, huma.Error503ServiceUnavailable("logs are not available on this API")
	}
	q := logs.Query{DeploymentID: v.ID, Build: in.Source != string(logs.SourceRuntime), Runtime: in.Source != string(logs.SourceBuild), Since: in.Since, Until: in.Until}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return nil, huma.Error422UnprocessableEntity("since must be before until")
	}
	cursor := in.Cursor
	if in.LastEventID != "" {
		cursor = in.LastEventID
	}
	if q.After, err = logs.ParseCursor(cursor); err != nil {
		return nil, huma.Error422UnprocessableEntity("cursor is not one this API handed out")
	}
	if strings.Contains(in.Accept, "text/event-stream") {
		if q.Runtime && (!q.Since.IsZero() || !q.Until.IsZero()) {
			return nil, huma.Error422UnprocessableEntity(logs.ErrTimeFilter.Error())
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { a.streamLogs(hctx, q) }}, nil
	}
	page, err := a.Logs.Reader.Read(ctx, q, min(in.Limit, maxLogPage))
	if errors.Is(err, logs.ErrTimeFilter) {
		return nil, huma.Error422UnprocessableEntity(err.Error())
	}
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", v.ID, err)
	}
	body := LogPage{Items: make([]LogLine, len(page.Lines)), Missing: make([]LogMissing, len(page.Missing)), NextCursor: page.Next.String(), More: page.More}
	for i, l := range page.Lines {
		body.Items[i] = logLineOut(l)
	}
	for i, m := range page.Missing {
		body.Missing[i] = LogMissing(m)
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		hctx.SetHeader("Content-Type", "application/json")
		hctx.SetStatus(http.StatusOK)
		_ = json.NewEncoder(hctx.BodyWriter()).Encode(body) // the client went away: nothing to do
	}}, nil
}

func logLineOut(l logs.Line) LogLine {
	out := LogLine{ID: l.ID, Source: logSource(l.Source), Stream: logStream(l.Stream), Text: l.Text}
	if l.InstanceID != uuid.Nil {
		out.InstanceID = &l.InstanceID
	}
	if !l.At.IsZero() {
		out.Timestamp = &l.At
	}
	return out
}

// streamLogs writes the deployment's log as Server-Sent Events until it is
// finished or the client leaves (then the request's context ends Follow,
// and with it every goroutine it started).
func (a *API) streamLogs(hctx huma.Context, q logs.Query) {
	ctx := hctx.Context()
	hctx.SetHeader("Content-Type", "text/event-stream")
	hctx.SetHeader("Cache-Control", "no-cache")
	hctx.SetHeader("X-Accel-Buffering", "no") // nginx: do not hold events back
	hctx.SetStatus(http.StatusOK)
	w := hctx.BodyWriter()
	rc := http.NewResponseController(w.(http.ResponseWriter))
	// Without a server WriteTimeout the deadline would outlive the
	// request on a kept-alive connection.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	send := func(event, id string, data any) error {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout)) // unsupported by a recorder: then unbounded
		var err error
		if event == "" {
			_, err = io.WriteString(w, ": keep-alive\n\n")
		} else {
			err = writeEvent(w, event, id, data)
		}
		if err != nil {
			return err
		}
		return rc.Flush()
	}
	// The headers go out at once: a client learns the stream is open
	// before the first line.
	if err := rc.Flush(); err != nil {
		return
	}
	keepAlive := a.Logs.KeepAlive
	if keepAlive <= 0 {
		keepAlive = 15 * time.Second
	}
	err := a.Logs.Reader.Follow(ctx, q, keepAlive, func(e logs.Event) error {
		switch {
		case e.Line != nil:
			return send("line", e.Cursor.String(), logLineOut(*e.Line))
		case e.Missing != nil:
			return send("missing", e.Cursor.String(), LogMissing(*e.Missing))
		default:
			return send("", "", nil)
		}
	})
	if ctx.Err() != nil {
		return // the client left
	}
	if err != nil {
		logFailure(ctx, http.StatusInternalServerError, fmt.Errorf("follow logs of %s: %w", q.DeploymentID, err))
		_ = send("error", "", map[string]string{"detail": "internal error; reconnect with the last event's id to resume"})
		return
	}
	d, err := deployment.Store{DB: a.Deploys.DB}.Get(ctx, q.DeploymentID)
	status := ""
	if err == nil {
		status = string(d.Status)
	}
	_ = send("end", "", map[string]string{"status": status})
}

// writeEvent writes one event; JSON has no raw newlines, so data is one
// line.
func writeEvent(w io.Writer, event, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("event: " + event + "\n")
	if id != "" {
		sb.WriteString("id: " + id + "\n")
	}
	sb.WriteString("data: ")
	sb.Write(b)
	sb.WriteString("\n\n")
	_, err = io.WriteString(w, sb.String())
	return err
}
