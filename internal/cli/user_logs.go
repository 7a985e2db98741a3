package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

func (u *user) logsCmd() *cobra.Command {
	var follow, build, runtime bool
	c := &cobra.Command{
		Use:   "logs [deployment]",
		Short: "print a deployment's build and runtime logs",
		Long: "Prints the log of the deployment (an id or the start of one; default: the project's newest), the build's\n" +
			"lines first. -f follows it live until the deployment is finished; Ctrl-C stops following and changes nothing.\n" +
			"With --json, one JSON line per log line.",
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if build && runtime {
				return usagef("--build and --runtime exclude each other; without either, both")
			}
			ctx := cmd.Context()
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			dep, err := u.pickDeployment(ctx, c, a)
			if err != nil {
				return err
			}
			var source *client.GetDeploymentLogsParamsSource
			if build || runtime {
				s := client.GetDeploymentLogsParamsSourceBuild
				if runtime {
					s = client.GetDeploymentLogsParamsSourceRuntime
				}
				source = &s
			}
			if follow {
				return u.followLogs(ctx, c, dep, source)
			}
			return u.readLogs(ctx, c, dep, source)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log live until the deployment is finished")
	c.Flags().BoolVar(&build, "build", false, "only the build's lines")
	c.Flags().BoolVar(&runtime, "runtime", false, "only the instances' lines")
	return u.projectFlag(c)
}

// pickDeployment is the deployment named by id or prefix, or the
// project's newest.
func (u *user) pickDeployment(ctx context.Context, c *client.ClientWithResponses, a []string) (uuid.UUID, error) {
	if len(a) == 1 {
		return u.rollbackTarget(ctx, c, a) // an id, or a prefix among the project's
	}
	p, err := u.currentProject(ctx, c)
	if err != nil {
		return uuid.Nil, err
	}
	ds, err := listDeployments(ctx, c, p.Id)
	if err != nil {
		return uuid.Nil, err
	}
	if len(ds) == 0 {
		return uuid.Nil, codedError{ExitNotFound, fmt.Errorf("%s has no deployments yet", p.Slug)}
	}
	return slices.MaxFunc(ds, func(x, y client.Deployment) int { return x.CreatedAt.Compare(y.CreatedAt) }).Id, nil
}

func (u *user) printLine(l client.LogLine) {
	if u.lineHook != nil {
		u.lineHook(l)
		return
	}
	w := u.logOut
	if w == nil {
		w = u.env.Stdout
	}
	if u.json {
		_ = json.NewEncoder(w).Encode(l) // stdout went away: nothing to tell
		return
	}
	who := "build"
	if l.InstanceId != nil {
		who = l.InstanceId.String()[:8] // enough to tell a deployment's few instances apart
	}
	fmt.Fprintf(w, "%-8s | %s\n", who, l.Text)
}

func (u *user) printMissing(m client.LogMissing) {
	fmt.Fprintf(u.env.Stderr, "(the log of instance %s is missing: %s)\n", m.InstanceId, m.Detail)
}

func (u *user) readLogs(ctx context.Context, c *client.ClientWithResponses, dep uuid.UUID, source *client.GetDeploymentLogsParamsSource) error {
	limit := int64(1000)
	params := &client.GetDeploymentLogsParams{Source: source, Limit: &limit}
	for {
		res, err := c.GetDeploymentLogsWithResponse(ctx, dep.String(), params)
		if err := check(res, err); err != nil {
			return err
		}
		page := res.JSON200
		if page.Items != nil {
			for _, l := range *page.Items {
				u.printLine(l)
			}
		}
		if page.Missing != nil {
			for _, m := range *page.Missing {
				u.printMissing(m)
			}
		}
		if !page.More {
			return nil
		}
		params.Cursor = &page.NextCursor
	}
}

// errStreamCut is a stream that ended before its `end` event.
var errStreamCut = errors.New("the log stream ended early")

// followLogs reads the live log (Server-Sent Events) until its end event,
// reconnecting after a cut with the last event's id so that no line is
// lost or repeated. Ctrl-C ends it without an error: following changes
// nothing on the server.
func (u *user) followLogs(ctx context.Context, c *client.ClientWithResponses, dep uuid.UUID, source *client.GetDeploymentLogsParamsSource) error {
	var last string
	failures := 0
	for {
		err := u.followOnce(ctx, c, dep, source, &last)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return nil
		}
		var coded codedError
		var usage usageError
		if errors.As(err, &coded) || errors.As(err, &usage) {
			return err
		}
		if failures++; failures > 5 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(failures) * time.Second):
		}
	}
}

func (u *user) followOnce(ctx context.Context, c *client.ClientWithResponses, dep uuid.UUID, source *client.GetDeploymentLogsParamsSource, last *string) error {
	accept := "text/event-stream"
	params := &client.GetDeploymentLogsParams{Source: source, Accept: &accept}
	if *last != "" {
		params.LastEventID = last
	}
	res, err := c.GetDeploymentLogs(ctx, dep.String(), params)
	if err != nil {
		return fmt.Errorf("the API: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20)) // a problem+json is small
		return apiError(client.CheckStatus(res.StatusCode, body))
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20) // a line event holds one log line of up to 16 KiB, escaped
	var event, id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" {
				done, err := u.sseEvent(event, data)
				if err != nil {
					return err
				}
				if id != "" {
					*last = id
				}
				if done {
					return nil
				}
			}
			event, id, data = "", "", ""
		case strings.HasPrefix(line, ":"): // a keep-alive comment
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", errStreamCut, err)
	}
	return errStreamCut
}

// sseEvent handles one event; done is the end of the log.
func (u *user) sseEvent(event, data string) (done bool, err error) {
	switch event {
	case "line":
		var l client.LogLine
		if err := json.Unmarshal([]byte(data), &l); err != nil {
			return false, fmt.Errorf("a log line: %w", err)
		}
		u.printLine(l)
	case "missing":
		var m client.LogMissing
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return false, fmt.Errorf("a missing log: %w", err)
		}
		u.printMissing(m)
	case "end":
		var end struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal([]byte(data), &end) // only for the message
		if !u.json && u.lineHook == nil {
			fmt.Fprintf(u.env.Stderr, "(the deployment is %s: the log ends here)\n", end.Status)
		}
		return true, nil
	case "error":
		return false, fmt.Errorf("%w: %s", errStreamCut, data)
	}
	return false, nil
}
