package operator_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
)

// TestCrowdedInstancesSpreadOutWhenNodesReturn: a deployment placed while
// two of its three workers were away runs all three instances on the one
// left (as after a restore). Once the others are back, healing moves
// instances out one at a time, each only after its replacement is healthy,
// until every node holds one; then it changes nothing.
func TestCrowdedInstancesSpreadOutWhenNodesReturn(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	var nodes []uuid.UUID
	rows, err := c.pool.Query(ctx, `SELECT id FROM nodes ORDER BY hostname`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, id)
	}
	if _, err := c.pool.Exec(ctx, `UPDATE nodes SET status = 'dead' WHERE id <> $1`, nodes[0]); err != nil {
		t.Fatal(err)
	}
	dep := c.deployment(t)
	c.step(t, dep)
	c.healthy(t, dep)
	c.step(t, dep)
	if got := c.perNode(t, dep); got[nodes[0]] != 3 {
		t.Fatalf("with one node up the deployment runs %v, want all 3 on it", got)
	}
	if _, err := c.pool.Exec(ctx, `UPDATE nodes SET status = 'active', last_heartbeat_at = now()`); err != nil {
		t.Fatal(err)
	}

	for pass := 0; pass < 12; pass++ {
		if err := c.l.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		live, healthy := c.liveHealthy(t, dep)
		if healthy < 3 {
			t.Fatalf("pass %d: %d healthy instances, fewer than the 3 wanted (%d live)", pass, healthy, live)
		}
		c.healthy(t, dep) // the agents start what was placed
	}
	got := c.perNode(t, dep)
	for _, n := range nodes {
		if got[n] != 1 {
			t.Fatalf("after healing: %v, want one instance on each of the 3 nodes", got)
		}
	}
}

// TestASurplusInstanceIsStopped: four live instances of a three-replica
// deployment, as two operators healing the same shortfall at once leave
// it: healing stops one, and only one.
func TestASurplusInstanceIsStopped(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	dep := c.activeDeployment(t)
	var free uuid.UUID
	if err := c.pool.QueryRow(ctx, `SELECT id FROM nodes WHERE id NOT IN (SELECT node_id FROM instances WHERE deployment_id = $1) LIMIT 1`, dep).Scan(&free); err != nil {
		t.Fatal(err)
	}
	// A copy of one of its instances on the fourth node, with its own id
	// and address.
	if _, err := c.pool.Exec(ctx, `INSERT INTO instances
		SELECT (jsonb_populate_record(null::instances, to_jsonb(i) || jsonb_build_object(
			'id', $3::uuid, 'node_id', $2::uuid, 'ipv6_address', 'fd7a:7765:7400:ffff::1/128'))).*
		FROM instances i WHERE deployment_id = $1 LIMIT 1`, dep, free, id.New()); err != nil {
		t.Fatal(err)
	}
	if live, _ := c.liveHealthy(t, dep); live != 4 {
		t.Fatalf("%d live before healing, want 4", live)
	}
	for range 3 {
		if err := c.l.Heal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if live, healthy := c.liveHealthy(t, dep); live != 3 || healthy != 3 {
		t.Fatalf("after healing %d live, %d healthy; want 3 and 3", live, healthy)
	}
}

// perNode counts dep's instances meant to run, by node.
func (c *cluster) perNode(t *testing.T, dep uuid.UUID) map[uuid.UUID]int {
	t.Helper()
	ins, err := instance.Store{DB: c.pool}.ListLive(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]int{}
	for _, in := range ins {
		if in.Desired == instance.DesiredRunning {
			out[in.NodeID]++
		}
	}
	return out
}

// liveHealthy counts dep's instances meant to run, and the healthy ones
// among them.
func (c *cluster) liveHealthy(t *testing.T, dep uuid.UUID) (live, healthy int) {
	t.Helper()
	ins, err := instance.Store{DB: c.pool}.ListLive(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.Desired != instance.DesiredRunning {
			continue
		}
		live++
		if in.State == instance.StateHealthy {
			healthy++
		}
	}
	return live, healthy
}

// TestAnAddedInstanceIsKept: an instance added through the management API
// raises the deployment's count, so healing keeps it rather than stopping
// it as one beyond the count.
func TestAnAddedInstanceIsKept(t *testing.T) {
	c := newCluster(t, 4)
	ctx := context.Background()
	dep := c.activeDeployment(t)
	in, err := c.l.AddInstance(ctx, dep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.status(t, dep); d.Replicas != 4 {
		t.Fatalf("after adding an instance the deployment wants %d, want 4", d.Replicas)
	}
	c.healthy(t, dep)
	for range 3 {
		if err := c.l.Heal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if live, healthy := c.liveHealthy(t, dep); live != 4 || healthy != 4 {
		t.Fatalf("after healing %d live, %d healthy; want the added one kept (4)", live, healthy)
	}
	if got, _ := (instance.Store{DB: c.pool}).Get(ctx, in.ID); got.Desired != instance.DesiredRunning {
		t.Fatal("the added instance was stopped")
	}
}
