package db_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

// A redelivered X-GitHub-Delivery must not be acted on twice: the second
// insert reports pgx.ErrNoRows and leaves the first row alone.
func TestWebhookDeliveryIsRecordedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	insert := func() (db.WebhookDelivery, error) {
		return f.q.WebhookDeliveryInsert(ctx, db.WebhookDeliveryInsertParams{
			ID: id.New(), DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Event: "push", PayloadSha256: strings.Repeat("0", 64),
		})
	}
	first, err := insert()
	if err != nil {
		t.Fatalf("first WebhookDeliveryInsert: %v", err)
	}
	if _, err := insert(); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("second WebhookDeliveryInsert: err = %v, want pgx.ErrNoRows", err)
	}
	got, err := f.q.WebhookDeliveryGetByDeliveryID(ctx, first.DeliveryID)
	if err != nil || got.ID != first.ID {
		t.Fatalf("WebhookDeliveryGetByDeliveryID = %v, %v; want the first row %v", got.ID, err, first.ID)
	}
}

// DeploymentSetStatus is a compare-and-set: from a status outside
// @from_statuses it changes nothing, so two operators cannot both advance
// the same deployment.
func TestDeploymentSetStatusOnlyFromListedStatuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	set := func(status string, from ...string) (db.Deployment, error) {
		return f.q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: f.deployment.ID, Status: status, FromStatuses: from})
	}

	if _, err := set("deploying", "building"); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("queued -> deploying from [building]: err = %v, want pgx.ErrNoRows", err)
	}
	d, err := f.q.DeploymentGetByID(ctx, f.deployment.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != "queued" || d.DeployingAt != nil || !d.UpdatedAt.Equal(f.deployment.UpdatedAt) {
		t.Fatalf("after refused transition: status %q, deploying_at %v, updated_at %v; want it untouched", d.Status, d.DeployingAt, d.UpdatedAt)
	}

	d, err = set("building", "queued")
	if err != nil {
		t.Fatalf("queued -> building from [queued]: %v", err)
	}
	if d.Status != "building" || d.BuildingAt == nil {
		t.Fatalf("after building: status %q, building_at %v", d.Status, d.BuildingAt)
	}
	// The loser of a race sees its from-status gone.
	if _, err := set("building", "queued"); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("second queued -> building: err = %v, want pgx.ErrNoRows", err)
	}
	d, err = f.q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
		ID: f.deployment.ID, Status: "failed", FailureReason: ptr("build failed"), FromStatuses: []string{"building"},
	})
	if err != nil || d.FailureReason == nil || *d.FailureReason != "build failed" || d.FailedAt == nil {
		t.Fatalf("building -> failed = %+v, %v", d, err)
	}
}

func TestNodeAllocateNeverOverAllocates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	node := f.newNode(t, "10.0.0.2:7000", "fd00:0:0:2::/64", 1000, 2048)
	alloc := func(cpu, mem int32) (db.Node, error) {
		return f.q.NodeAllocate(ctx, db.NodeAllocateParams{ID: node.ID, CpuMillis: cpu, MemoryMb: mem})
	}

	if _, err := alloc(1001, 1); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("more cpu than the node has: err = %v, want pgx.ErrNoRows", err)
	}
	if _, err := alloc(1, 2049); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("more memory than the node has: err = %v, want pgx.ErrNoRows", err)
	}

	// Ten schedulers race for 300m each on a 1000m node: three win.
	const racers = 10
	var wg sync.WaitGroup
	errs := make(chan error, racers)
	for range racers {
		wg.Go(func() {
			_, err := alloc(300, 100)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, pgx.ErrNoRows):
			t.Errorf("NodeAllocate: %v", err)
		}
	}
	got, err := f.q.NodeGetByID(ctx, node.ID)
	if err != nil {
		t.Fatal(err)
	}
	if won != 3 || got.FreeCpuMillis != 100 || got.FreeMemoryMb != 2048-300 {
		t.Fatalf("%d allocations won, free %dm/%dMB; want 3 and 100m/%dMB", won, got.FreeCpuMillis, got.FreeMemoryMb, 2048-300)
	}

	// A negative reservation would raise free above the node's capacity.
	var pgErr *pgconn.PgError
	if _, err := alloc(-5000, 0); !errors.As(err, &pgErr) || pgErr.ConstraintName != "nodes_free_cpu_millis_check" {
		t.Fatalf("negative cpu reservation: err = %v, want nodes_free_cpu_millis_check", err)
	}

	// Releasing more than was reserved never raises free above the total.
	got, err = f.q.NodeRelease(ctx, db.NodeReleaseParams{ID: node.ID, CpuMillis: 5000, MemoryMb: 5000})
	if err != nil || got.FreeCpuMillis != 1000 || got.FreeMemoryMb != 2048 {
		t.Fatalf("NodeRelease = %d/%d, %v; want 1000/2048", got.FreeCpuMillis, got.FreeMemoryMb, err)
	}
}

// A node re-registering with less capacity than is allocated on it keeps
// what is allocated and has nothing free, rather than a negative balance.
func TestNodeRegisterKeepsAllocations(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.q.NodeAllocate(ctx, db.NodeAllocateParams{ID: f.node.ID, CpuMillis: 3000, MemoryMb: 1024}); err != nil {
		t.Fatalf("NodeAllocate: %v", err)
	}
	n, err := f.q.NodeRegister(ctx, nodeParams(f.node.InternalAddress, "fd00:0:0:1::/64", 2000, 8192))
	if err != nil {
		t.Fatalf("NodeRegister again: %v", err)
	}
	if n.FreeCpuMillis != 0 || n.FreeMemoryMb != 8192-1024 {
		t.Fatalf("free after shrinking = %dm/%dMB, want 0m/%dMB", n.FreeCpuMillis, n.FreeMemoryMb, 8192-1024)
	}
}
