package logs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/logs"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const token = "logs-test-token"

// fakeRuntime is a container runtime whose instances' output the test
// writes; reading it behaves like internal/runtime's reader: what is there,
// then (following) what comes, until the instance is removed.
type fakeRuntime struct {
	mu   sync.Mutex
	logs map[uuid.UUID]*fakeLog
}

type fakeLog struct {
	data    []byte
	removed bool
	epoch   int           // readers of an earlier epoch end: the agent restarted
	wake    chan struct{} // closed and replaced on every change
}

func (f *fakeRuntime) log(id uuid.UUID) *fakeLog {
	if f.logs == nil {
		f.logs = map[uuid.UUID]*fakeLog{}
	}
	l, ok := f.logs[id]
	if !ok {
		l = &fakeLog{wake: make(chan struct{})}
		f.logs[id] = l
	}
	return l
}

func (f *fakeRuntime) write(id uuid.UUID, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log(id)
	l.data = append(l.data, s...)
	close(l.wake)
	l.wake = make(chan struct{})
}

func (f *fakeRuntime) remove(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log(id)
	l.removed = true
	close(l.wake)
	l.wake = make(chan struct{})
}

// restart ends every reader of id, as a restarting node agent does.
func (f *fakeRuntime) restart(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log(id)
	l.epoch++
	close(l.wake)
	l.wake = make(chan struct{})
}

func (f *fakeRuntime) Status(_ context.Context, id uuid.UUID) (runtime.Status, error) {
	return runtime.Status{InstanceID: id, State: runtime.StateRunning}, nil
}

func (f *fakeRuntime) List(context.Context) ([]runtime.Status, error) { return nil, nil }

func (f *fakeRuntime) Logs(ctx context.Context, id uuid.UUID, follow bool) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.logs[id]; !ok {
		return nil, runtime.ErrNotFound
	}
	return &fakeReader{f: f, id: id, follow: follow, ctx: ctx, epoch: f.logs[id].epoch}, nil
}

type fakeReader struct {
	f      *fakeRuntime
	id     uuid.UUID
	follow bool
	ctx    context.Context
	pos    int
	epoch  int
}

func (r *fakeReader) Read(p []byte) (int, error) {
	for {
		r.f.mu.Lock()
		l := r.f.logs[r.id]
		if l.epoch != r.epoch {
			r.f.mu.Unlock()
			return 0, io.EOF
		}
		if r.pos < len(l.data) {
			n := copy(p, l.data[r.pos:])
			r.pos += n
			r.f.mu.Unlock()
			return n, nil
		}
		wake, done := l.wake, !r.follow || l.removed
		r.f.mu.Unlock()
		if done {
			return 0, io.EOF
		}
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, io.EOF
		}
	}
}

func (r *fakeReader) Close() error { return nil }

// world is a deployment with a build, on a node whose real node API (with
// a fake runtime underneath) serves its instances' logs.
type world struct {
	t       *testing.T
	pool    *pgxpool.Pool
	rt      *fakeRuntime
	dep     uuid.UUID
	build   uuid.UUID
	node    node.Node
	nodeAPI *httptest.Server
	reader  *logs.Reader
}

func newWorld(t *testing.T) *world {
	t.Helper()
	pool := testdb.New(t)
	w := &world{t: t, pool: pool, rt: &fakeRuntime{}, dep: id.New(), build: id.New()}
	n, err := nodeagent.Register(context.Background(), pool, ipam.DefaultCluster, t.TempDir(), node.Registration{
		Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.node = n
	proj, img := testdb.Project(t, pool), id.New()
	w.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r', 't', 'sha256:' || repeat('0', 64))`, img, proj)
	w.exec(`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'building', 'upload', 'k', 3, $3)`, w.dep, proj, img)
	w.exec(`INSERT INTO builds (id, deployment_id, attempt, status) VALUES ($1, $2, 1, 'running')`, w.build, w.dep)
	agent := &nodeagent.Agent{Pool: pool, Node: n, Observer: w.rt, Token: token, Log: zlog.Discard()}
	w.nodeAPI = httptest.NewServer(agent.APIHandler())
	t.Cleanup(w.nodeAPI.Close)
	url := w.nodeAPI.URL
	w.reader = &logs.Reader{Pool: pool, Poll: 50 * time.Millisecond, Log: zlog.Discard(),
		Nodes: logs.Nodes{Token: token, URL: func(node.Node) string { return url }}}
	return w
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pool.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// instance creates an instance through the node API.
func (w *world) instance() uuid.UUID {
	w.t.Helper()
	body := fmt.Sprintf(`{"deployment_id":"%s","port":8080,"cpu_millis":100,"memory_mb":64}`, w.dep)
	req, _ := http.NewRequest("POST", w.nodeAPI.URL+"/v1/instances", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		w.t.Fatalf("create instance: %s", res.Status)
	}
	iid, err := uuid.Parse(strings.TrimPrefix(res.Header.Get("Location"), "/v1/instances/"))
	if err != nil {
		w.t.Fatal(err)
	}
	w.exec(`UPDATE instances SET state = 'healthy' WHERE id = $1`, iid)
	w.rt.write(iid, "")
	return iid
}

// buildLines stores lines in the build log as a builder would.
func (w *world) buildLines(lines ...string) {
	w.t.Helper()
	bw := buildlog.NewWriter(w.pool, w.build, buildlog.DefaultLimits, zlog.Discard())
	for _, l := range lines {
		bw.Line(buildlog.Stdout, "%s", l)
	}
	if err := bw.Close(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

func texts(lines []logs.Line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l.Source) + ":" + l.Text
	}
	return out
}

func same(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func TestReadPagesThroughBuildAndRuntimeExactlyOnce(t *testing.T) {
	w := newWorld(t)
	w.buildLines("b1", "b2", "b3")
	i1 := w.instance()
	w.rt.write(i1, "r1\nr2\n")
	i2 := w.instance()
	w.rt.write(i2, "s1\r\ns2 without a newline")
	want := []string{"build:b1", "build:b2", "build:b3", "runtime:r1", "runtime:r2", "runtime:s1", "runtime:s2 without a newline"}

	q := logs.Query{DeploymentID: w.dep, Build: true, Runtime: true}
	all, err := w.reader.Read(t.Context(), q, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(all.Lines); !same(got, want) || all.More || len(all.Missing) > 0 {
		t.Fatalf("one page: %q (more %v, missing %v), want %q", got, all.More, all.Missing, want)
	}
	if l := all.Lines[3]; l.InstanceID != i1 || l.Stream != logs.Output || l.ID != i1.String()+".0" || !l.At.IsZero() {
		t.Fatalf("runtime line %+v", l)
	}
	if l := all.Lines[0]; l.Stream != buildlog.Stdout || l.At.IsZero() || l.InstanceID != uuid.Nil {
		t.Fatalf("build line %+v", l)
	}

	var paged []logs.Line
	for q.After = (logs.Cursor{}); ; {
		p, err := w.reader.Read(t.Context(), q, 2)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, p.Lines...)
		// The cursor goes through its text form, as a client hands it back.
		if q.After, err = logs.ParseCursor(p.Next.String()); err != nil {
			t.Fatal(err)
		}
		if !p.More {
			break
		}
	}
	if got := texts(paged); !same(got, want) {
		t.Fatalf("paged by 2: %q, want %q", got, want)
	}
	// Nothing new: an empty page. New output: only that.
	w.rt.write(i1, "r3\n")
	w.buildLines("b4")
	p, err := w.reader.Read(t.Context(), q, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(p.Lines); !same(got, []string{"build:b4", "runtime:r3"}) {
		t.Fatalf("after the last page: %q", got)
	}
}

func TestReadFiltersBySourceAndTime(t *testing.T) {
	w := newWorld(t)
	w.buildLines("early")
	var cut time.Time
	if err := w.pool.QueryRow(t.Context(), `SELECT max(created_at) + interval '1 microsecond' FROM build_logs`).Scan(&cut); err != nil {
		t.Fatal(err)
	}
	w.exec(`UPDATE build_logs SET created_at = created_at - interval '1 hour'`)
	w.buildLines("late")
	iid := w.instance()
	w.rt.write(iid, "app\n")

	for _, tc := range []struct {
		name string
		q    logs.Query
		want []string
	}{
		{"build only", logs.Query{Build: true}, []string{"build:early", "build:late"}},
		{"runtime only", logs.Query{Runtime: true}, []string{"runtime:app"}},
		{"since", logs.Query{Build: true, Since: cut.Add(-30 * time.Minute)}, []string{"build:late"}},
		{"until", logs.Query{Build: true, Until: cut.Add(-30 * time.Minute)}, []string{"build:early"}},
	} {
		tc.q.DeploymentID = w.dep
		p, err := w.reader.Read(t.Context(), tc.q, 100)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := texts(p.Lines); !same(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if _, err := w.reader.Read(t.Context(), logs.Query{DeploymentID: w.dep, Runtime: true, Since: time.Now()}, 100); !errors.Is(err, logs.ErrTimeFilter) {
		t.Fatalf("runtime with since: %v, want ErrTimeFilter", err)
	}
}

func TestANodeThatIsDownIsNamedNotFatal(t *testing.T) {
	w := newWorld(t)
	w.buildLines("b1")
	up := w.instance()
	w.rt.write(up, "fine\n")
	down, err := nodeagent.Register(context.Background(), w.pool, ipam.DefaultCluster, t.TempDir(), node.Registration{
		Hostname: "w2", InternalAddress: "100.64.0.2:7000", CPUMillis: 4000, MemoryMB: 8192,
	})
	if err != nil {
		t.Fatal(err)
	}
	lost := w.instance()
	w.exec(`UPDATE instances SET node_id = $1 WHERE id = $2`, down.ID, lost)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connections to it are refused
	upURL := w.nodeAPI.URL
	w.reader.Nodes.URL = func(n node.Node) string {
		if n.ID == down.ID {
			return deadURL
		}
		return upURL
	}

	q := logs.Query{DeploymentID: w.dep, Build: true, Runtime: true}
	p, err := w.reader.Read(t.Context(), q, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(p.Lines); !same(got, []string{"build:b1", "runtime:fine"}) {
		t.Fatalf("lines %q", got)
	}
	if len(p.Missing) != 1 || p.Missing[0].InstanceID != lost || p.Missing[0].NodeID != down.ID || !strings.Contains(p.Missing[0].Detail, "w2") {
		t.Fatalf("missing %+v, want instance %s on w2", p.Missing, lost)
	}

	// Following: the same, as an event, while the rest streams on.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events := make(chan logs.Event, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- w.reader.Follow(ctx, q, time.Hour, func(e logs.Event) error { events <- e; return nil })
	}()
	sawMissing, lines := false, 0
	for !sawMissing || lines < 2 {
		select {
		case e := <-events:
			if e.Missing != nil {
				sawMissing = e.Missing.InstanceID == lost
			}
			if e.Line != nil {
				lines++
			}
		case err := <-errc:
			t.Fatalf("Follow returned %v", err)
		case <-time.After(30 * time.Second):
			t.Fatalf("no missing event (lines %d)", lines)
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow after the reader left: %v", err)
	}
}

// follower collects a Follow's events.
type follower struct {
	events chan logs.Event
	errc   chan error
	cancel context.CancelFunc
}

func follow(t *testing.T, r *logs.Reader, q logs.Query, keepAlive time.Duration) *follower {
	ctx, cancel := context.WithCancel(t.Context())
	f := &follower{events: make(chan logs.Event, 1000), errc: make(chan error, 1), cancel: cancel}
	go func() { f.errc <- r.Follow(ctx, q, keepAlive, func(e logs.Event) error { f.events <- e; return nil }) }()
	t.Cleanup(cancel)
	return f
}

// next is the next line event (keep-alives skipped).
func (f *follower) next(t *testing.T) logs.Event {
	t.Helper()
	for {
		select {
		case e := <-f.events:
			if e.Line != nil || e.Missing != nil {
				return e
			}
		case err := <-f.errc:
			// Follow hands over its last events before it returns, and
			// select picks at random among ready cases: those events
			// come first, and the end stays for whoever waits for it.
			for len(f.events) > 0 {
				if e := <-f.events; e.Line != nil || e.Missing != nil {
					f.errc <- err
					return e
				}
			}
			t.Fatalf("Follow returned %v before the next line", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no next line")
		}
	}
}

func (f *follower) lines(t *testing.T, n int) []logs.Event {
	t.Helper()
	out := make([]logs.Event, n)
	for i := range out {
		out[i] = f.next(t)
	}
	return out
}

func eventTexts(es []logs.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Line.Source) + ":" + e.Line.Text
	}
	return out
}

func TestFollowStreamsLiveAndResumesExactlyAfterACursor(t *testing.T) {
	w := newWorld(t)
	w.buildLines("b1", "b2")
	iid := w.instance()
	w.rt.write(iid, "r1\n")
	q := logs.Query{DeploymentID: w.dep, Build: true, Runtime: true}
	f := follow(t, w.reader, q, time.Hour)
	got := f.lines(t, 3)
	// Runtime and build lines interleave as they come: compare per source.
	if !containsAll(eventTexts(got), "build:b1", "build:b2", "runtime:r1") {
		t.Fatalf("replay: %q", eventTexts(got))
	}
	// Lines written while streaming arrive.
	w.buildLines("b3")
	w.rt.write(iid, "r2\npartial ")
	live := f.lines(t, 2)
	if !containsAll(eventTexts(live), "build:b3", "runtime:r2") {
		t.Fatalf("live: %q", eventTexts(live))
	}
	w.rt.write(iid, "line\n")
	if e := f.next(t); e.Line.Text != "partial line" {
		t.Fatalf("a line written in two parts came as %q", e.Line.Text)
	}
	f.cancel()
	if err := <-f.errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow after cancel: %v", err)
	}

	// Resume after the first event: exactly everything after it, once.
	all := append(append(got, live...), logs.Event{})
	cursor, err := logs.ParseCursor(got[0].Cursor.String())
	if err != nil {
		t.Fatal(err)
	}
	w.buildLines("b4")
	w.rt.write(iid, "r3\n")
	q.After = cursor
	g := follow(t, w.reader, q, time.Hour)
	rest := eventTexts(g.lines(t, 7))
	want := append(eventTexts(all[1:5]), "runtime:partial line", "build:b4", "runtime:r3")
	if !containsAll(rest, want...) || len(rest) != len(want) {
		t.Fatalf("resumed after %q: %q, want %q", eventTexts(got[:1]), rest, want)
	}
	select {
	case e := <-g.events:
		if e.Line != nil {
			t.Fatalf("a line more than written: %+v", e.Line)
		}
	case <-time.After(200 * time.Millisecond): // a look, not a timing assertion: the count above is the check
	}
}

func containsAll(got []string, want ...string) bool {
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		if seen[w] == 0 {
			return false
		}
		seen[w]--
	}
	return true
}

func TestFollowEndsWhenTheDeploymentIsFinished(t *testing.T) {
	w := newWorld(t)
	w.buildLines("b1")
	iid := w.instance()
	w.rt.write(iid, "r1\n")

	// The build log alone ends with the build.
	b := follow(t, w.reader, logs.Query{DeploymentID: w.dep, Build: true}, 10*time.Millisecond)
	b.next(t)
	w.buildLines("last build line")
	w.exec(`UPDATE builds SET status = 'succeeded' WHERE id = $1`, w.build)
	w.exec(`UPDATE deployments SET status = 'active' WHERE id = $1`, w.dep)
	if e := b.next(t); e.Line.Text != "last build line" {
		t.Fatalf("last build event %+v", e.Line)
	}
	select {
	case err := <-b.errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the build log's follow did not end with the build")
	}

	// Both: on while the deployment runs, over once it stopped, with what
	// the instance wrote last.
	f := follow(t, w.reader, logs.Query{DeploymentID: w.dep, Build: true, Runtime: true}, 10*time.Millisecond)
	f.lines(t, 3)
	keepAlive := false
	for !keepAlive {
		select {
		case e := <-f.events:
			keepAlive = e.Line == nil && e.Missing == nil
		case <-time.After(30 * time.Second):
			t.Fatal("no keep-alive on an idle stream")
		}
	}
	w.rt.write(iid, "stopping\n")
	w.exec(`UPDATE deployments SET status = 'stopped' WHERE id = $1`, w.dep)
	w.exec(`UPDATE instances SET state = 'stopped' WHERE id = $1`, iid)
	w.rt.remove(iid)
	var tail []string
	for done := false; !done; {
		select {
		case e := <-f.events:
			if e.Line != nil {
				tail = append(tail, e.Line.Text)
			}
		case err := <-f.errc:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		case <-time.After(30 * time.Second):
			t.Fatal("the follow did not end with the deployment")
		}
	}
	for len(f.events) > 0 {
		if e := <-f.events; e.Line != nil {
			tail = append(tail, e.Line.Text)
		}
	}
	if !same(tail, []string{"stopping"}) {
		t.Fatalf("last lines %q, want the instance's last line once", tail)
	}
}

func TestCursorText(t *testing.T) {
	c := logs.Cursor{Builds: map[uuid.UUID]uuid.UUID{id.New(): id.New()}, Instances: map[uuid.UUID]int64{id.New(): 42, id.New(): 0}}
	back, err := logs.ParseCursor(c.String())
	if err != nil || back.String() != c.String() {
		t.Fatalf("round trip %q → %q, %v", c, back, err)
	}
	for _, bad := range []string{"x", "b.1.2", "i." + id.New().String() + ".-1", "i." + id.New().String() + ".x", "q." + id.New().String() + ".1", "b." + id.New().String()} {
		if _, err := logs.ParseCursor(bad); !errors.Is(err, logs.ErrBadCursor) {
			t.Errorf("%q: %v, want ErrBadCursor", bad, err)
		}
	}
}

// An instance that crashed and was replaced still shows what it wrote,
// and a node that closes a live instance's log (its agent restarted) is
// asked again, from where the stream got.
func TestFollowReplaysStoppedInstancesAndOutlivesANodeRestart(t *testing.T) {
	w := newWorld(t)
	crashed := w.instance()
	w.rt.write(crashed, "panic: boom\n")
	w.rt.remove(crashed)
	w.exec(`UPDATE instances SET state = 'failed', state_reason = 'exited 2' WHERE id = $1`, crashed)
	live := w.instance()
	w.rt.write(live, "listening\n")
	f := follow(t, w.reader, logs.Query{DeploymentID: w.dep, Runtime: true}, time.Hour)
	if got := eventTexts(f.lines(t, 2)); !containsAll(got, "runtime:panic: boom", "runtime:listening") {
		t.Fatalf("replay %q", got)
	}
	// The node closes the live log as a restarting agent does; the
	// instance still runs, so the stream reconnects and goes on.
	w.rt.restart(live)
	w.rt.write(live, "after the restart\n")
	if e := f.next(t); e.Line.Text != "after the restart" {
		t.Fatalf("after the node closed the log: %+v", e.Line)
	}
}

func TestAPIPortPrefersTheAdvertisedAddress(t *testing.T) {
	url := logs.APIPort(8082)
	if got := url(node.Node{InternalAddress: "127.0.0.1:28200", APIAddress: "127.0.0.1:28101"}); got != "http://127.0.0.1:28101" {
		t.Errorf("advertised: %s", got)
	}
	if got := url(node.Node{InternalAddress: "[fd7a::1]:8083"}); got != "http://[fd7a::1]:8082" {
		t.Errorf("not advertised: %s", got)
	}
}
