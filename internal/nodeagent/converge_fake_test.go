package nodeagent_test

// The convergence loop against an in-memory runtime: cheap enough to walk
// every edge (crash loops, bad images, slow starts, stops, orphans). The
// real thing is exercised in converge_test.go.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type fakeRuntime struct {
	mu       sync.Mutex
	byID     map[uuid.UUID]*runtime.Status
	specs    map[uuid.UUID]runtime.Spec
	missing  map[string]bool // image refs that do not exist
	starts   map[uuid.UUID]int
	exitCode uint32 // when non-zero, every start exits at once with it
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{byID: map[uuid.UUID]*runtime.Status{}, specs: map[uuid.UUID]runtime.Spec{}, missing: map[string]bool{}, starts: map[uuid.UUID]int{}}
}

func (f *fakeRuntime) Pull(_ context.Context, ref string, _ *runtime.Auth) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.missing[ref] {
		return fmt.Errorf("%w: %s", runtime.ErrImageNotFound, ref)
	}
	return nil
}

func (f *fakeRuntime) Create(_ context.Context, s runtime.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byID[s.InstanceID] = &runtime.Status{InstanceID: s.InstanceID, State: runtime.StateCreated}
	f.specs[s.InstanceID] = s
	return nil
}

func (f *fakeRuntime) Start(_ context.Context, iid uuid.UUID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.byID[iid]
	f.starts[iid]++
	s.State, s.StartedAt = runtime.StateRunning, time.Now()
	if f.exitCode != 0 {
		s.State, s.ExitCode = runtime.StateExited, f.exitCode
	}
	return nil
}

func (f *fakeRuntime) Stop(_ context.Context, iid uuid.UUID, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byID, iid)
	return nil
}

func (f *fakeRuntime) List(context.Context) ([]runtime.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.Status
	for _, s := range f.byID {
		out = append(out, *s)
	}
	return out, nil
}

func (f *fakeRuntime) set(iid uuid.UUID, mutate func(*runtime.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mutate(f.byID[iid])
}

type harness struct {
	pool    *pgxpool.Pool
	rt      *fakeRuntime
	c       *nodeagent.Converger
	healthy map[netip.AddrPort]bool
	mu      sync.Mutex
	node    node.Node
	deploy  uuid.UUID
	image   db.Image
	project uuid.UUID
	ring    *secret.Ring
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	pool := testdb.New(t)
	ctx := context.Background()
	self, err := nodeagent.Register(ctx, pool, ipam.DefaultCluster, t.TempDir(), node.Registration{Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 8192})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{pool: pool, rt: newFakeRuntime(), healthy: map[netip.AddrPort]bool{}, node: self}
	h.ring, _ = secret.ParseRing(secret.NewKey("k1"))
	proj := testdb.Project(t, pool)
	h.project, h.deploy = proj, id.New()
	img := id.New()
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`UPDATE projects SET health_check_path = '/healthz' WHERE id = $1`, []any{proj}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'registry.test/app', 'v1', 'sha256:' || repeat('a', 64))`, []any{img, proj}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, []any{h.deploy, proj, img}},
	} {
		if _, err := pool.Exec(ctx, s.q, s.args...); err != nil {
			t.Fatalf("%s: %v", s.q, err)
		}
	}
	h.image, _ = db.New(pool).ImageGetByID(ctx, img)
	policy := nodeagent.DefaultPolicy
	policy.RestartBackoff, policy.MaxBackoff, policy.MaxRestarts, policy.HealthDeadline = time.Millisecond, time.Millisecond, 3, 200*time.Millisecond
	// One pass, one step of every instance: the tests look after each.
	policy.PassWait = time.Minute
	h.c = &nodeagent.Converger{
		Pool: pool, NodeID: self.ID, Runtime: h.rt, Control: controlPlane(t, pool, self.ID, h.ring), Policy: policy, Log: zlog.Discard(),
		Probe: func(_ context.Context, addr netip.AddrPort, path string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if path != "/healthz" {
				return fmt.Errorf("probed %s, want the project's path", path)
			}
			if !h.healthy[addr] {
				return errors.New("connection refused")
			}
			return nil
		},
	}
	return h
}

func (h *harness) instance(t *testing.T) instance.Instance {
	t.Helper()
	in, err := instance.Store{DB: h.pool}.Create(context.Background(), h.node, instance.New{
		DeploymentID: h.deploy, Port: 8080, CPUMillis: 250, MemoryMB: 256,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (h *harness) setHealthy(in instance.Instance, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.healthy[in.AddrPort()] = ok
}

func (h *harness) pass(t *testing.T) {
	t.Helper()
	if _, err := h.c.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) state(t *testing.T, in instance.Instance) instance.Instance {
	t.Helper()
	got, err := instance.Store{DB: h.pool}.Get(context.Background(), in.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestFakeInstanceBecomesHealthyWithItsEnvironment(t *testing.T) {
	h := newHarness(t)
	ct, kid := h.ring.Seal([]byte("s3cr3t"), secret.EnvContext(h.project, "API_TOKEN"))
	if _, err := db.New(h.pool).EnvironmentVariableUpsert(context.Background(), db.EnvironmentVariableUpsertParams{
		ID: id.New(), ProjectID: h.project, Name: "API_TOKEN", ValueCiphertext: ct, KeyID: kid,
	}); err != nil {
		t.Fatal(err)
	}
	in := h.instance(t)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("after one pass: %s", got.State)
	}
	spec := h.rt.specs[in.ID]
	if spec.Env["API_TOKEN"] != "s3cr3t" || spec.Port != 8080 || spec.CPUMillis != 250 || spec.MemoryMB != 256 ||
		spec.Image != "registry.test/app@"+h.image.Digest {
		t.Fatalf("spec = %+v", spec)
	}
	h.setHealthy(in, true)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateHealthy || got.StateReason != "" {
		t.Fatalf("after the health check passed: %s %v", got.State, got.StateReason)
	}
	h.pass(t)
	if h.rt.starts[in.ID] != 1 {
		t.Fatalf("a healthy instance was started %d times", h.rt.starts[in.ID])
	}
}

func TestFakeSlowStartTurnsUnhealthyAfterTheDeadline(t *testing.T) {
	h := newHarness(t)
	in := h.instance(t)
	h.pass(t)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateStarting {
		t.Fatalf("within the deadline: %s", got.State)
	}
	time.Sleep(250 * time.Millisecond)
	h.pass(t)
	got := h.state(t, in)
	if got.State != instance.StateUnhealthy || !strings.Contains(got.StateReason, "health check GET /healthz on port 8080 failed") {
		t.Fatalf("after the deadline: %s %v", got.State, got.StateReason)
	}
	h.setHealthy(in, true)
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateHealthy {
		t.Fatalf("recovered: %s", got.State)
	}
}

func TestFakeCrashLoopBacksOffThenFails(t *testing.T) {
	h := newHarness(t)
	h.rt.exitCode = 3
	in := h.instance(t)
	for range 20 {
		h.pass(t)
		time.Sleep(5 * time.Millisecond)
		if h.state(t, in).State == instance.StateFailed {
			break
		}
	}
	got := h.state(t, in)
	if got.State != instance.StateFailed || !strings.Contains(got.StateReason, "exited with code 3; gave up after 3 restarts") {
		t.Fatalf("crash loop ended as %s %v", got.State, got.StateReason)
	}
	if n := h.rt.starts[in.ID]; n != 4 {
		t.Fatalf("started %d times, want 1 + 3 restarts", n)
	}
	// Failed is terminal: the operator replaces it. Nothing runs any more.
	h.pass(t)
	if st, _ := h.rt.List(context.Background()); len(st) != 0 {
		t.Fatalf("a failed instance still has a container: %+v", st)
	}
}

func TestFakeOOMIsNamedInTheReason(t *testing.T) {
	h := newHarness(t)
	in := h.instance(t)
	h.pass(t)
	h.rt.set(in.ID, func(s *runtime.Status) { s.State, s.ExitCode, s.OOMKilled = runtime.StateExited, 137, true })
	h.pass(t)
	got := h.state(t, in)
	if got.State != instance.StateUnhealthy || !strings.Contains(got.StateReason, "more than its 256 MiB of memory") {
		t.Fatalf("after an OOM kill: %s %v", got.State, got.StateReason)
	}
}

// An instance killed for filling its writable layer fails rather than
// restarting on the same full layer; the operator replaces it.
func TestFakeDiskKillFailsTheInstance(t *testing.T) {
	h := newHarness(t)
	in := h.instance(t)
	h.pass(t)
	h.rt.set(in.ID, func(s *runtime.Status) { s.State, s.ExitCode, s.DiskKilled = runtime.StateExited, 137, true })
	h.pass(t)
	got := h.state(t, in)
	if got.State != instance.StateFailed || !strings.Contains(got.StateReason, "INSTANCE_DISK_LIMIT_MB") {
		t.Fatalf("after a disk kill: %s %v", got.State, got.StateReason)
	}
	if n := h.rt.starts[in.ID]; n != 1 {
		t.Fatalf("started %d times, want once: no restart on a full layer", n)
	}
}

func TestFakeMissingImageFails(t *testing.T) {
	h := newHarness(t)
	h.rt.missing["registry.test/app@"+h.image.Digest] = true
	in := h.instance(t)
	h.pass(t)
	got := h.state(t, in)
	if got.State != instance.StateFailed || !strings.Contains(got.StateReason, "cannot pull image") {
		t.Fatalf("missing image: %s %v", got.State, got.StateReason)
	}
}

func TestFakeUndecryptableVariableFails(t *testing.T) {
	h := newHarness(t)
	if _, err := db.New(h.pool).EnvironmentVariableUpsert(context.Background(), db.EnvironmentVariableUpsertParams{
		ID: id.New(), ProjectID: h.project, Name: "BROKEN", ValueCiphertext: []byte("not a ciphertext at all"), KeyID: "k1",
	}); err != nil {
		t.Fatal(err)
	}
	in := h.instance(t)
	h.pass(t)
	got := h.state(t, in)
	if got.State != instance.StateFailed || !strings.Contains(got.StateReason, "environment variable BROKEN cannot be decrypted") {
		t.Fatalf("%s %v", got.State, got.StateReason)
	}
}

func TestFakeStopAndOrphans(t *testing.T) {
	h := newHarness(t)
	in := h.instance(t)
	h.setHealthy(in, true)
	h.pass(t)
	h.pass(t)
	if _, err := (instance.Store{DB: h.pool}).SetDesired(context.Background(), in.ID, instance.DesiredStopped); err != nil {
		t.Fatal(err)
	}
	h.pass(t)
	if got := h.state(t, in); got.State != instance.StateStopped || got.StoppedAt == nil {
		t.Fatalf("after stop: %s", got.State)
	}
	// A container the database knows nothing of (left by a crashed agent)
	// is removed.
	orphan := id.New()
	h.rt.Create(context.Background(), runtime.Spec{InstanceID: orphan})
	h.rt.Start(context.Background(), orphan)
	h.pass(t)
	if st, _ := h.rt.List(context.Background()); len(st) != 0 {
		t.Fatalf("orphan still there: %+v", st)
	}
}
