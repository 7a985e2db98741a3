package bootstrap

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// fakeCluster is what the operators do while bootstrap rolls out: a
// draining node's instances get healthy replacements on other active
// nodes, then stop. It records each move of a node's instances.
type fakeCluster struct {
	t    *testing.T
	pool *pgxpool.Pool
	dep  uuid.UUID

	mu     sync.Mutex
	events []string
	next   byte
}

// startFakeCluster runs the first bootstrap, then deploys one active
// deployment with an instance on each worker and starts moving instances
// off draining nodes as the operators' healing does.
func startFakeCluster(t *testing.T, c *Cluster, env map[string]string, m machines) *fakeCluster {
	t.Helper()
	if _, out, err := run(t, c, env, m, false); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	f := &fakeCluster{t: t, pool: testdb.Pool(t, env["DATABASE_URL"]), dep: id.New(), next: 1}
	ctx := context.Background()
	project, image := testdb.Project(t, f.pool), id.New()
	f.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r', 't', 'sha256:' || repeat('0', 64))`, image, project)
	f.exec(`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, image_id, replicas) VALUES ($1, $2, 'active', 'upload', 'k', $3, 3)`, f.dep, project, image)
	for _, n := range nodes(t, env["DATABASE_URL"]) {
		f.place(n)
	}
	loop, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for loop.Err() == nil {
			f.heal(loop)
			select {
			case <-loop.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return f
}

func (f *fakeCluster) exec(sql string, args ...any) {
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		f.t.Errorf("%s: %v", sql, err)
	}
}

// place starts a healthy instance of the deployment on n.
func (f *fakeCluster) place(n node.Node) {
	f.mu.Lock()
	a := n.Prefix.Addr().As16()
	a[15] = f.next
	f.next++
	f.mu.Unlock()
	f.exec(`INSERT INTO instances (id, deployment_id, node_id, image_id, desired_state, state, ipv6_address, port, cpu_millis, memory_mb)
		SELECT $1, $2, $3, image_id, 'running', 'healthy', $4, 8080, 100, 64 FROM deployments WHERE id = $2`, id.New(), f.dep, n.ID, netip.AddrFrom16(a).String())
}

func (f *fakeCluster) heal(ctx context.Context) {
	ns, err := node.Store{DB: f.pool}.List(ctx)
	if err != nil {
		return
	}
	for _, n := range ns {
		if n.Status != node.StatusDraining {
			continue
		}
		var leaving []uuid.UUID
		rows, err := f.pool.Query(ctx, `SELECT id FROM instances WHERE node_id = $1 AND desired_state = 'running'`, n.ID)
		if err != nil {
			return
		}
		for rows.Next() {
			var iid uuid.UUID
			rows.Scan(&iid) //nolint:errcheck // a uuid column
			leaving = append(leaving, iid)
		}
		rows.Close()
		for _, iid := range leaving {
			for _, to := range ns {
				if to.Status == node.StatusActive && to.ID != n.ID {
					f.place(to)
					break
				}
			}
			f.exec(`UPDATE instances SET desired_state = 'stopped', state = 'stopped' WHERE id = $1`, iid)
		}
		if len(leaving) > 0 {
			f.event("moved " + n.Hostname)
		}
	}
}

func (f *fakeCluster) event(e string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *fakeCluster) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.events, ", ")
}

// watchRestarts checks, as each worker's agent is restarted, that it is
// the only worker drained, that nothing of the deployment is left on it,
// and that the deployment is whole elsewhere; and records the restart.
func (f *fakeCluster) watchRestarts(c *Cluster, m machines) {
	for _, n := range c.Nodes {
		if !n.Has(RoleWorker) {
			continue
		}
		m[n.Name].onRestart = func(h *fakeHost, _ []string) {
			ctx := context.Background()
			ns, err := node.Store{DB: f.pool}.List(ctx)
			if err != nil {
				f.t.Error(err)
				return
			}
			for _, o := range ns {
				if want := map[bool]node.Status{true: node.StatusDraining, false: node.StatusActive}[o.Hostname == h.n.Name]; o.Status != want {
					f.t.Errorf("%s restarted while %s is %s", h.n.Name, o.Hostname, o.Status)
				}
			}
			var here, healthyElsewhere int
			f.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE n.hostname = $2 AND i.state <> 'stopped'),
				count(*) FILTER (WHERE n.hostname <> $2 AND i.state = 'healthy' AND i.desired_state = 'running')
				FROM instances i JOIN nodes n ON n.id = i.node_id WHERE i.deployment_id = $1`, f.dep, h.n.Name).Scan(&here, &healthyElsewhere) //nolint:errcheck // checked below
			if here != 0 || healthyElsewhere < 3 {
				f.t.Errorf("%s restarted with %d instances still on it and %d healthy elsewhere", h.n.Name, here, healthyElsewhere)
			}
			f.event("restart " + h.n.Name)
		}
	}
}

func newBinary(t *testing.T, c *Cluster, v string) {
	t.Helper()
	if err := os.WriteFile(c.Path(c.Release.Binary), []byte("zeitwork "+v), 0o755); err != nil {
		t.Fatal(err)
	}
}

func runWait(t *testing.T, c *Cluster, env map[string]string, m machines, wait time.Duration) (string, error) {
	t.Helper()
	var out bytes.Buffer
	b := &Bootstrap{Cluster: c, Env: env, Out: &out, Dial: m.dial(t, c, env["DATABASE_URL"]), Wait: wait, Poll: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := b.Run(ctx)
	return out.String(), err
}

func statuses(t *testing.T, url string) string {
	t.Helper()
	var s []string
	for _, n := range nodes(t, url) {
		s = append(s, n.Hostname+" "+string(n.Status))
	}
	return strings.Join(s, ", ")
}

// inOrder fails unless every want is in out, each after the one before.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	at := 0
	for _, w := range want {
		i := strings.Index(out[at:], w)
		if i < 0 {
			t.Fatalf("output lacks %q after position %d:\n%s", w, at, out)
		}
		at += i + len(w)
	}
}

func TestANewBinaryRollsOutOneDrainedWorkerAtATime(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	f := startFakeCluster(t, c, env, m)
	f.watchRestarts(c, m)

	newBinary(t, c, "v2")
	out, err := runWait(t, c, env, m, time.Minute)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	// Each worker: drained, its instance moved, restarted, undrained,
	// before the next one is touched.
	if got, want := f.log(), "moved wk-1, restart wk-1, moved wk-2, restart wk-2, moved wk-3, restart wk-3"; got != want {
		t.Fatalf("events %q, want %q\n%s", got, want, out)
	}
	inOrder(t, out,
		"[apply] op-1: start zeitwork-operator.service zeitwork-api.socket zeitwork-api.service: running, but not with this binary and configuration: to restart, then wait until its operator is alive",
		"op-1: operator alive again", "[applied] op-1: start",
		"[apply] wk-1: start containerd.service zeitwork-nodeagent.service: running, but not with this binary and configuration: to roll out",
		"wk-1: draining node", "wk-1: its instances of active deployments have moved and their replacements are healthy",
		"wk-1: agent restarted and heartbeating", "wk-1: undrained", "[applied] wk-1: start",
		"wk-2: draining node", "wk-2: undrained", "wk-3: draining node", "wk-3: undrained",
		"applied ")
	if s := statuses(t, env["DATABASE_URL"]); strings.Contains(s, "draining") {
		t.Fatalf("nodes after the rollout: %s", s)
	}
	for _, w := range []string{"wk-1", "wk-2", "wk-3"} {
		if got := string(m[w].files[DrainMarker]); got != string(undrainedMarker) {
			t.Errorf("%s's drain marker: %q", w, got)
		}
	}
	if out, err := runWait(t, c, env, m, time.Minute); err != nil || !strings.Contains(out, "nothing changed: all") {
		t.Fatalf("a run after the rollout: %v\n%s", err, out)
	}

	// A worker a person drained is upgraded and left drained.
	wk3 := nodeNamed(t, env["DATABASE_URL"], "wk-3")
	if _, err := (node.Store{DB: f.pool}).SetStatus(context.Background(), wk3.ID, node.StatusDraining); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"wk-1", "wk-2"} {
		m[w].onRestart = nil // two drained at once, on purpose
	}
	m["wk-3"].onRestart = nil
	newBinary(t, c, "v3")
	out, err = runWait(t, c, env, m, time.Minute)
	if err != nil || !strings.Contains(out, "wk-3: left draining: it was drained before this run") || m["wk-3"].restarts != 3 {
		t.Fatalf("upgrade of a drained worker: %v, %d restarts\n%s", err, m["wk-3"].restarts, out)
	}
	if n := nodeNamed(t, env["DATABASE_URL"], "wk-3"); n.Status != node.StatusDraining {
		t.Fatalf("wk-3 is %s after the upgrade, drained by hand before", n.Status)
	}
}

func TestAKilledRolloutIsFinishedByTheNextRun(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	f := startFakeCluster(t, c, env, m)
	f.watchRestarts(c, m)

	// Killed between wk-2's drain and its restart.
	newBinary(t, c, "v2")
	m["wk-2"].failRestart = true
	out, err := runWait(t, c, env, m, time.Minute)
	if err == nil || !strings.Contains(out, "[failed] wk-2: start") {
		t.Fatalf("interrupted upgrade: %v\n%s", err, out)
	}
	if s := statuses(t, env["DATABASE_URL"]); s != "wk-1 active, wk-2 draining, wk-3 active" {
		t.Fatalf("after the interrupted upgrade: %s", s)
	}
	if m["wk-3"].restarts != 1 {
		t.Fatal("the upgrade went on past wk-2")
	}
	out, err = runWait(t, c, env, m, time.Minute)
	if err != nil {
		t.Fatalf("resumed upgrade: %v\n%s", err, out)
	}
	inOrder(t, out, "[done] wk-1: start", "[apply] wk-2: start", "wk-2: undrained", "[applied] wk-2: start", "wk-3: undrained")
	if got, want := f.log(), "moved wk-1, restart wk-1, moved wk-2, restart wk-2, moved wk-3, restart wk-3"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}

	// Killed after wk-1's restart, before its undrain: its new agent is
	// silent until the wait gives up.
	newBinary(t, c, "v3")
	m["wk-1"].onRestart = func(h *fakeHost, _ []string) { h.silent.Store(true) }
	out, err = runWait(t, c, env, m, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "wk-1: gave up after 2s waiting for its agent to heartbeat again") {
		t.Fatalf("silent agent: %v\n%s", err, out)
	}
	if s := statuses(t, env["DATABASE_URL"]); s != "wk-1 draining, wk-2 active, wk-3 active" {
		t.Fatalf("after the interrupted upgrade: %s", s)
	}
	_, out, err = run(t, c, env, m, true)
	if err != nil || !strings.Contains(out, "[todo] wk-1: start containerd.service zeitwork-nodeagent.service: left draining by a rollout that did not finish: to finish it and undrain") {
		t.Fatalf("dry run after: %v\n%s", err, out)
	}
	m["wk-1"].silent.Store(false)
	restarts := m["wk-1"].restarts
	out, err = runWait(t, c, env, m, time.Minute)
	if err != nil || !strings.Contains(out, "[applied] wk-1: start") || !strings.Contains(out, "wk-1: undrained") {
		t.Fatalf("resumed upgrade: %v\n%s", err, out)
	}
	if m["wk-1"].restarts != restarts {
		t.Error("wk-1 was restarted again though it already ran the new binary")
	}
	if s := statuses(t, env["DATABASE_URL"]); strings.Contains(s, "draining") {
		t.Fatalf("after the resumed upgrade: %s", s)
	}
}

// A worker whose instances cannot move is not restarted: the wait gives
// up with an error naming it, and the next run tries again.
func TestARolloutStopsAtAWorkerWhoseInstancesCannotMove(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	if _, out, err := run(t, c, env, m, false); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	pool := testdb.Pool(t, env["DATABASE_URL"])
	f := &fakeCluster{t: t, pool: pool, dep: id.New(), next: 1}
	project, image := testdb.Project(t, pool), id.New()
	f.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r', 't', 'sha256:' || repeat('0', 64))`, image, project)
	f.exec(`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, image_id, replicas) VALUES ($1, $2, 'active', 'upload', 'k', $3, 3)`, f.dep, project, image)
	f.place(nodeNamed(t, env["DATABASE_URL"], "wk-1"))
	newBinary(t, c, "v2")
	out, err := runWait(t, c, env, m, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "wk-1: gave up after 300ms waiting for its instances to move and their replacements to be healthy: 1 instances of active deployments still on it, 1 deployments short") {
		t.Fatalf("%v\n%s", err, out)
	}
	if m["wk-1"].restarts != 1 {
		t.Error("wk-1 was restarted with its instance still on it")
	}
}

func nodeNamed(t *testing.T, url, name string) node.Node {
	t.Helper()
	for _, n := range nodes(t, url) {
		if n.Hostname == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return node.Node{}
}

// A worker that is also an operator is drained around its restart and
// then waited on until its operator is back; a rollout of it killed
// before the undrain is finished without waiting for an operator that has
// no reason to restart.
func TestAWorkerThatIsAlsoAnOperator(t *testing.T) {
	c, env := testCluster(t)
	for i := range c.Nodes {
		if c.Nodes[i].Name == "wk-1" {
			c.Nodes[i].Roles = append(c.Nodes[i].Roles, RoleOperator)
		}
	}
	m := machines{}
	startFakeCluster(t, c, env, m)
	newBinary(t, c, "v2")
	out, err := runWait(t, c, env, m, time.Minute)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	inOrder(t, out, "wk-1: draining node", "wk-1: undrained", "wk-1: operator alive again", "[applied] wk-1: start", "wk-2: draining node")

	newBinary(t, c, "v3")
	m["wk-1"].onRestart = func(h *fakeHost, _ []string) { h.silent.Store(true) }
	if out, err := runWait(t, c, env, m, 2*time.Second); err == nil || !strings.Contains(err.Error(), "wk-1: gave up after 2s waiting for its agent to heartbeat again") {
		t.Fatalf("silent agent: %v\n%s", err, out)
	}
	m["wk-1"].silent.Store(false)
	out, err = runWait(t, c, env, m, 5*time.Second)
	if err != nil || !strings.Contains(out, "wk-1: undrained") {
		t.Fatalf("resumed upgrade: %v\n%s", err, out)
	}
}

// After restarting the api (and the builder) on a node, a rollout waits
// until it answers /v1/health before it restarts the next node; one that
// never answers stops the run with an error naming its node, and no node
// after it is restarted.
func TestARolloutWaitsForTheAPIAndTheBuilderToAnswer(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	startFakeCluster(t, c, env, m)
	var mu sync.Mutex
	var events []string
	event := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	for _, name := range []string{"op-1", "op-2", "build-1"} {
		// Each refuses three asks after its restart, as a process that
		// has not bound its port yet.
		m[name].refuse = 3
		m[name].onRestart = func(h *fakeHost, _ []string) { event("restart " + h.n.Name) }
		m[name].onHealthy = func(h *fakeHost, role string) { event(role + " on " + h.n.Name + " answers") }
	}
	newBinary(t, c, "v2")
	out, err := runWait(t, c, env, m, time.Minute)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	mu.Lock()
	got := strings.Join(events, ", ")
	mu.Unlock()
	if want := "restart op-1, api on op-1 answers, restart op-2, api on op-2 answers, restart build-1, builder on build-1 answers"; got != want {
		t.Fatalf("events %q, want %q\n%s", got, want, out)
	}
	inOrder(t, out,
		"[apply] op-1: start zeitwork-operator.service zeitwork-api.socket zeitwork-api.service: running, but not with this binary and configuration: to restart, then wait until its operator is alive, then until its api answers /v1/health",
		"op-1: operator alive again", "op-1: api answers /v1/health, version v2", "[applied] op-1: start",
		"[apply] op-2: start", "op-2: api answers /v1/health, version v2", "[applied] op-2: start",
		"[apply] build-1: start buildkit.service zeitwork-builder.service: running, but not with this binary and configuration: to restart, then wait until its builder answers /v1/health",
		"build-1: builder answers /v1/health, version v2", "[applied] build-1: start", "[apply] edge-1: start")

	// op-2's api never answers: the run stops there, naming it.
	m["op-2"].unhealthy = true
	op3, edge := m["op-3"].restarts, m["edge-1"].restarts
	newBinary(t, c, "v3")
	out, err = runWait(t, c, env, m, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "op-2: gave up after 2s waiting for its api to answer GET http://127.0.0.1:8080/v1/health with 200: curl: (7) Failed to connect") ||
		!strings.Contains(out, "[failed] op-2: start") {
		t.Fatalf("an api that never answers: %v\n%s", err, out)
	}
	if m["op-3"].restarts != op3 {
		t.Error("op-3 was restarted after op-2's api did not answer")
	}

	// Nor build-1's builder: the edge after it is not restarted.
	// (The workers before it must each roll out within the wait.)
	m["op-2"].unhealthy, m["build-1"].unhealthy = false, true
	out, err = runWait(t, c, env, m, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "build-1: gave up after 5s waiting for its builder to answer GET http://127.0.0.1:9102/v1/health with 200") {
		t.Fatalf("a builder that never answers: %v\n%s", err, out)
	}
	if m["edge-1"].restarts != edge {
		t.Error("edge-1 was restarted after build-1's builder did not answer")
	}
	m["build-1"].unhealthy = false
	if out, err := runWait(t, c, env, m, time.Minute); err != nil {
		t.Fatalf("once build-1 answers: %v\n%s", err, out)
	}

	// An api that stopped answering (until it is restarted) is not
	// "running": the plan says so, and a run restarts it and waits for it.
	m["op-1"].hung = true
	_, out, err = run(t, c, env, m, true)
	if err != nil || !strings.Contains(out, "[todo] op-1: start zeitwork-operator.service zeitwork-api.socket zeitwork-api.service: running, but its api does not answer /v1/health (curl: (7) Failed to connect") {
		t.Fatalf("dry run with op-1's api hung: %v\n%s", err, out)
	}
	restarts := m["op-1"].restarts
	out, err = runWait(t, c, env, m, time.Minute)
	if err != nil || m["op-1"].restarts != restarts+1 || !strings.Contains(out, "op-1: api answers /v1/health") {
		t.Fatalf("op-1's hung api: %v, %d restarts (was %d)\n%s", err, m["op-1"].restarts, restarts, out)
	}
}
