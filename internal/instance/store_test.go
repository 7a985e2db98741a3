package instance_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

type fixture struct {
	pool       *pgxpool.Pool
	nodes      node.Store
	store      instance.Store
	node       node.Node
	deployment uuid.UUID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool := testdb.New(t)
	f := &fixture{pool: pool, nodes: node.Store{DB: pool}, store: instance.Store{DB: pool}, deployment: id.New()}
	var err error
	f.node, err = f.nodes.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 1000, MemoryMB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	proj, img := testdb.Project(t, pool), id.New()
	if _, err := pool.Exec(ctx, `INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, proj); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, f.deployment, proj, img); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) free(t *testing.T) int32 {
	t.Helper()
	n, err := f.nodes.Get(context.Background(), f.node.ID)
	if err != nil {
		t.Fatal(err)
	}
	return n.FreeCPUMillis
}

func TestCreateReservesCapacityAndRefusesWithTheRightError(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	in, err := f.store.Create(ctx, f.node, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 600, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	// The node reserves the CPU request, a quarter of the limit.
	if in.State != instance.StatePending || in.Desired != instance.DesiredRunning || !f.node.Prefix.Contains(in.Addr) || f.free(t) != 850 {
		t.Fatalf("created %+v, %dm CPU left", in, f.free(t))
	}
	if in.CPUMillis != 600 {
		t.Errorf("instance recorded %dm CPU, want its limit, 600m", in.CPUMillis)
	}
	for _, tc := range []struct {
		name string
		req  instance.New
		want error
	}{
		{"bad port", instance.New{DeploymentID: f.deployment, Port: 0, CPUMillis: 100, MemoryMB: 64}, instance.ErrInvalid},
		{"too small", instance.New{DeploymentID: f.deployment, Port: 80, CPUMillis: 1, MemoryMB: 64}, instance.ErrInvalid},
		{"no deployment", instance.New{DeploymentID: id.New(), Port: 80, CPUMillis: 100, MemoryMB: 64}, instance.ErrNotFound},
		{"no CPU room", instance.New{DeploymentID: f.deployment, Port: 80, CPUMillis: 3404, MemoryMB: 64}, instance.ErrNoCapacity},
		{"no memory room", instance.New{DeploymentID: f.deployment, Port: 80, CPUMillis: 100, MemoryMB: 769}, instance.ErrNoCapacity},
	} {
		if _, err := f.store.Create(ctx, f.node, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if f.free(t) != 850 {
		t.Fatalf("refused creates changed the reservation: %dm CPU left", f.free(t))
	}
}

// TestADevNodeHoldsThreeProjectsThroughARedeploy: `zeitwork dev` runs
// nodes of 2000m CPU and 4096 MiB, and projects default to three instances
// of 1000m and 512 MiB, spread one per node. Through a redeploy's grace
// period a node holds each project's old and new instance: six for three
// projects. Reserving the limit (1000m) would stop at two; the request
// (a quarter) fits all six, and memory, reserved in full, is what bounds it.
func TestADevNodeHoldsThreeProjectsThroughARedeploy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dev, err := f.nodes.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "dev1", InternalAddress: "127.0.0.1:7001", CPUMillis: 2000, MemoryMB: 4096})
	if err != nil {
		t.Fatal(err)
	}
	const projects, perProject = 3, 2 // old and new deployment's instance
	for i := range projects * perProject {
		if _, err := f.store.Create(ctx, dev, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 1000, MemoryMB: 512}); err != nil {
			t.Fatalf("instance %d of %d: %v", i+1, projects*perProject, err)
		}
	}
	n, err := f.nodes.Get(ctx, dev.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d instances of 1000m/512 MiB: %dm CPU and %d MiB free", projects*perProject, n.FreeCPUMillis, n.FreeMemoryMB)
	if n.FreeCPUMillis != 2000-6*250 || n.FreeMemoryMB != 4096-6*512 {
		t.Errorf("free %dm CPU, %d MiB; want %dm, %d MiB", n.FreeCPUMillis, n.FreeMemoryMB, 2000-6*250, 4096-6*512)
	}
	// Memory stays a hard reservation: two more fit, a ninth does not.
	for range 2 {
		if _, err := f.store.Create(ctx, dev, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 1000, MemoryMB: 512}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.store.Create(ctx, dev, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 10, MemoryMB: 512}); !errors.Is(err, instance.ErrNoCapacity) {
		t.Fatalf("a ninth instance on a node with no memory left: %v, want ErrNoCapacity", err)
	}
}

func TestDesiredStateAndDeleteFollowTheObservedState(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	in, err := f.store.Create(ctx, f.node, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 600, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.SetDesired(ctx, in.ID, "healthy"); !errors.Is(err, instance.ErrInvalid) {
		t.Fatalf("desired healthy: %v", err)
	}
	deleted, err := f.store.Delete(ctx, in.ID)
	if err != nil || deleted {
		t.Fatalf("delete of a running instance: %v %v", deleted, err)
	}
	if got, _ := f.store.Get(ctx, in.ID); got.Desired != instance.DesiredStopped {
		t.Fatalf("delete did not ask it to stop: %s", got.Desired)
	}
	// The agent reports it failed: it cannot run again, and may go.
	agent := instance.Store{DB: f.pool, Node: f.node.ID}
	if _, err := agent.Report(ctx, in.ID, instance.StateFailed, "exited with code 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.SetDesired(ctx, in.ID, instance.DesiredRunning); !errors.Is(err, instance.ErrInvalid) {
		t.Fatalf("a failed instance was asked to run again: %v", err)
	}
	if deleted, err := agent.Delete(ctx, in.ID); err != nil || !deleted || f.free(t) != 1000 {
		t.Fatalf("delete of a failed instance: %v %v, %dm CPU free", deleted, err, f.free(t))
	}
	if _, err := f.store.Get(ctx, in.ID); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestANodesStoreSeesOnlyItsInstances(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	in, err := f.store.Create(ctx, f.node, instance.New{DeploymentID: f.deployment, Port: 8080, CPUMillis: 100, MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	other := instance.Store{DB: f.pool, Node: id.New()}
	if _, err := other.Get(ctx, in.ID); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("another node's get: %v", err)
	}
	if _, err := other.SetDesired(ctx, in.ID, instance.DesiredStopped); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("another node's stop: %v", err)
	}
	mine, err := instance.Store{DB: f.pool, Node: f.node.ID}.ListAssigned(ctx)
	if err != nil || len(mine) != 1 || mine[0].ID != in.ID || mine[0].Image != "r/app@sha256:"+strings.Repeat("a", 64) {
		t.Fatalf("assigned: %+v %v", mine, err)
	}
}

func TestAnOutageIsNotNotFound(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://zeitwork@127.0.0.1:1/gone")
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := (instance.Store{DB: pool}).Get(context.Background(), id.New()); err == nil || errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("get with the database gone: %v", err)
	}
}
