package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const logsNodeToken = "api-logs-test-token"

// nodeLogs serves GET /v1/instances/{id}/logs as the node API does (see
// internal/nodeagent; internal/logs tests the real one): the bytes from
// ?offset, X-Log-Offset, the cluster token required; following holds the
// response open until the client leaves.
type nodeLogs struct {
	mu   sync.Mutex
	logs map[string]string
}

func (n *nodeLogs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+logsNodeToken {
		http.Error(w, "token", http.StatusUnauthorized)
		return
	}
	iid, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1/instances/"), "/logs")
	n.mu.Lock()
	text, found := n.logs[iid]
	n.mu.Unlock()
	if !ok || !found {
		http.NotFound(w, r)
		return
	}
	off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	if off > len(text) {
		off = 0
	}
	w.Header().Set("X-Log-Offset", strconv.Itoa(off))
	_, _ = io.WriteString(w, text[off:])
	if r.URL.Query().Get("follow") == "true" {
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
}

// logsEnv is a deployment with a build log and one instance on a node.
type logsEnv struct {
	*env
	owner    user
	dep      Deployment
	build    uuid.UUID
	instance uuid.UUID
	node     *httptest.Server
}

func newLogsEnv(t *testing.T) *logsEnv {
	t.Helper()
	e := newEnv(t)
	le := &logsEnv{env: e, owner: e.signIn(1, "owner")}
	p := e.createProject(le.owner, `{"name":"app"}`)
	le.dep = e.deploy(le.owner, archive(p, "src.tar.gz"))
	if err := e.pool().QueryRow(t.Context(), `SELECT id FROM builds WHERE deployment_id = $1`, le.dep.ID).Scan(&le.build); err != nil {
		t.Fatal(err)
	}
	n, err := node.Store{DB: e.pool()}.Register(t.Context(), ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	img := id.New()
	e.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, p.ID)
	e.exec(`UPDATE deployments SET image_id = $1 WHERE id = $2`, img, le.dep.ID)
	in, err := instance.Store{DB: e.pool()}.Create(t.Context(), n, instance.New{DeploymentID: le.dep.ID, Port: 8080, CPUMillis: 100, MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	le.instance = in.ID
	e.exec(`UPDATE instances SET state = 'healthy' WHERE id = $1`, in.ID)
	le.node = httptest.NewServer(&nodeLogs{logs: map[string]string{in.ID.String(): "r1\nr2\n"}})
	t.Cleanup(le.node.Close)
	nodeURL := le.node.URL
	e.api.Logs = Logs{KeepAlive: 20 * time.Millisecond, Reader: &logs.Reader{Pool: e.pool(), Poll: 50 * time.Millisecond, Log: zlog.Discard(),
		Nodes: logs.Nodes{Token: logsNodeToken, URL: func(node.Node) string { return nodeURL }}}}
	le.buildLines("b1", "b2", "b3")
	return le
}

func (le *logsEnv) buildLines(lines ...string) {
	le.t.Helper()
	w := buildlog.NewWriter(le.pool(), le.build, buildlog.DefaultLimits, zlog.Discard())
	for _, l := range lines {
		w.Line(buildlog.Stdout, "%s", l)
	}
	if err := w.Close(context.Background()); err != nil {
		le.t.Fatal(err)
	}
}

func (le *logsEnv) page(query string) LogPage {
	le.t.Helper()
	res := le.do("GET", "/v1/deployments/"+le.dep.ID.String()+"/logs"+query, "", bearer(le.owner)...)
	if res.Code != http.StatusOK {
		le.t.Fatalf("GET logs%s: %d %s", query, res.Code, res.body)
	}
	var p LogPage
	res.decode(le.t, &p)
	return p
}

func pageTexts(p LogPage) string {
	var out []string
	for _, l := range p.Items {
		out = append(out, string(l.Source)+":"+l.Text)
	}
	return strings.Join(out, " ")
}

func TestDeploymentLogsPage(t *testing.T) {
	le := newLogsEnv(t)
	le.exec(`UPDATE build_logs SET created_at = created_at - interval '1 hour' WHERE line = 'b1'`)
	p := le.page("")
	if got := pageTexts(p); got != "build:b1 build:b2 build:b3 runtime:r1 runtime:r2" || p.More || len(p.Missing) != 0 || p.NextCursor == "" {
		t.Fatalf("page %s (%+v)", got, p)
	}
	if b := p.Items[0]; b.Timestamp == nil || b.InstanceID != nil || b.Stream != "stdout" || len(b.ID) != 36 {
		t.Fatalf("build line %+v", b)
	}
	if r := p.Items[3]; r.Timestamp != nil || r.InstanceID == nil || *r.InstanceID != le.instance || r.Stream != "output" || r.ID != le.instance.String()+".0" {
		t.Fatalf("runtime line %+v", r)
	}
	for query, want := range map[string]string{
		"?source=build":   "build:b1 build:b2 build:b3",
		"?source=runtime": "runtime:r1 runtime:r2",
		"?source=build&since=" + url.QueryEscape(p.Items[1].Timestamp.Format(time.RFC3339Nano)): "build:b2 build:b3",
		"?cursor=" + url.QueryEscape(p.NextCursor):                                              "",
	} {
		if got := pageTexts(le.page(query)); got != want {
			t.Errorf("%s: %q, want %q", query, got, want)
		}
	}
	// Paging by two reads every line once.
	var all []string
	for cursor := ""; ; {
		p := le.page("?limit=2&cursor=" + url.QueryEscape(cursor))
		all = append(all, pageTexts(p))
		cursor = p.NextCursor
		if !p.More {
			break
		}
	}
	if got := strings.Join(all, " "); got != "build:b1 build:b2 build:b3 runtime:r1 runtime:r2" {
		t.Fatalf("paged: %q", got)
	}

	for _, query := range []string{"?source=runtime&since=2026-01-01T00:00:00Z", "?since=2026-01-01T00:00:00Z", "?source=both",
		"?cursor=nope", "?source=build&since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "?limit=0", "?since=yesterday"} {
		res := le.do("GET", "/v1/deployments/"+le.dep.ID.String()+"/logs"+query, "", bearer(le.owner)...)
		if res.Code != http.StatusUnprocessableEntity && res.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want a 4xx", query, res.Code, res.body)
		}
	}
}

func TestDeploymentLogsNameANodeThatIsDown(t *testing.T) {
	le := newLogsEnv(t)
	le.node.Close()
	p := le.page("")
	if got := pageTexts(p); got != "build:b1 build:b2 build:b3" {
		t.Fatalf("page %q", got)
	}
	if len(p.Missing) != 1 || p.Missing[0].InstanceID != le.instance || !strings.Contains(p.Missing[0].Detail, "w1") {
		t.Fatalf("missing %+v", p.Missing)
	}
}

// sseEvent is one Server-Sent Event; comment is a keep-alive.
type sseEvent struct{ event, id, data, comment string }

// stream opens the live logs and sends their events to a channel until
// the stream ends (then it is closed).
func (le *logsEnv) stream(ctx context.Context, srv string, header ...string) <-chan sseEvent {
	le.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv+"/v1/deployments/"+le.dep.ID.String()+"/logs", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+le.owner.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		le.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		le.t.Fatalf("stream: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	out := make(chan sseEvent, 1000)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				out <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = line
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "event":
					ev.event = v
				case "id":
					ev.id = v
				case "data":
					ev.data = v
				}
			}
		}
	}()
	return out
}

// lines reads n line events, skipping keep-alives.
func lines(t *testing.T, events <-chan sseEvent, n int) []sseEvent {
	t.Helper()
	var got []sseEvent
	for len(got) < n {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("stream ended after %d of %d lines", len(got), n)
			}
			if e.comment != "" {
				continue
			}
			if e.event != "line" {
				t.Fatalf("event %+v, want a line", e)
			}
			got = append(got, e)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d lines", len(got), n)
		}
	}
	return got
}

// rest reads every event up to the end of the stream.
func rest(t *testing.T, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var got []sseEvent
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return got
			}
			if e.comment == "" {
				got = append(got, e)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the stream did not end: %+v", got)
		}
	}
}

func texts(events []sseEvent) map[string]int {
	out := map[string]int{}
	for _, e := range events {
		var l struct {
			Source, Text string
		}
		if e.event == "line" {
			_ = json.Unmarshal([]byte(e.data), &l)
			out[l.Source+":"+l.Text]++
		} else {
			out[e.event]++
		}
	}
	return out
}

func TestDeploymentLogsStreamLiveResumeAndEnd(t *testing.T) {
	le := newLogsEnv(t)
	srv := httptest.NewServer(le.handler)
	defer srv.Close() // waits for the handlers: a leaked stream would hang here

	ctx, cancel := context.WithCancel(t.Context())
	first := le.stream(ctx, srv.URL)
	replay := lines(t, first, 5)
	le.buildLines("b4")
	live := lines(t, first, 1)
	if got := texts(live); got["build:b4"] != 1 {
		t.Fatalf("live line %+v", live)
	}
	// An idle stream keeps alive.
	for idle := false; !idle; {
		select {
		case e := <-first:
			if e.event != "" {
				t.Fatalf("event %+v on an idle stream", e)
			}
			idle = e.comment == ": keep-alive"
		case <-time.After(30 * time.Second):
			t.Fatal("no keep-alive on an idle stream")
		}
	}
	cancel() // the client leaves
	for range first {
	}

	// The deployment finishes; a client that reconnects after the second
	// event gets exactly what came after it, then the end.
	le.buildLines("b5")
	le.exec(`UPDATE builds SET status = 'cancelled' WHERE id = $1`, le.build)
	le.exec(`UPDATE deployments SET status = 'failed', failure_reason = 'cancelled' WHERE id = $1`, le.dep.ID)
	le.exec(`UPDATE instances SET state = 'stopped' WHERE id = $1`, le.instance)
	seen := append(replay, live...)
	got := rest(t, le.stream(t.Context(), srv.URL, "Last-Event-ID", seen[1].id))
	want := texts(append(seen[2:], sseEvent{event: "line", data: `{"source":"build","text":"b5"}`}, sseEvent{event: "end"}))
	if g := texts(got); len(g) != len(want) || !mapsEqual(g, want) {
		t.Fatalf("resumed after %s: %v, want %v", seen[1].data, g, want)
	}
	if end := got[len(got)-1]; end.event != "end" || !strings.Contains(end.data, `"failed"`) {
		t.Fatalf("last event %+v, want the end with the status", end)
	}
	// A fresh stream of a finished deployment replays and ends too.
	if all := rest(t, le.stream(t.Context(), srv.URL)); texts(all)["end"] != 1 || len(all) != 8 {
		t.Fatalf("finished deployment's stream: %v", texts(all))
	}
}

func mapsEqual(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}
