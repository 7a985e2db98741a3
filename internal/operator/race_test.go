package operator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestThreeOperatorsRacingOnManyDeployments: three operators share one
// database and queue; every deployment ends active with exactly its three
// instances on three distinct nodes — none scheduled twice, none placed
// twice, no node over its capacity.
func TestThreeOperatorsRacingOnManyDeployments(t *testing.T) {
	const deployments, nodes = 300, 12
	c := newCluster(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 1; i <= nodes; i++ {
		if _, err := (node.Store{DB: c.pool}).Register(ctx, ipam.DefaultCluster, node.Registration{
			ID: id.New(), Hostname: fmt.Sprintf("w%d", i), InternalAddress: fmt.Sprintf("100.64.1.%d:8090", i), CPUMillis: 40000, MemoryMB: 100000,
		}); err != nil {
			t.Fatal(err)
		}
	}
	c.pool.Exec(ctx, `UPDATE projects SET cpu_millis = 250, memory_mb = 256 WHERE id = $1`, c.project)

	for i := range 3 {
		lc := &operator.Lifecycle{Pool: c.pool, Place: operator.SchedulerPlacer(time.Minute), Policy: c.l.Policy, Log: zlog.Discard()}
		ws := queue.NewWorkers(operator.Queue)
		queue.Register(ws, &operator.DeployWorker{Lifecycle: lc})
		q, err := queue.New(c.pool, ws, config.Queue{Workers: 20, JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard().With("operator", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Stop(context.Background()) })
	}
	inserter, _ := queue.New(c.pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())

	// The node agents, played by the test: whatever is placed turns healthy.
	go func() {
		for ctx.Err() == nil {
			c.pool.Exec(ctx, `UPDATE instances SET state = 'healthy' WHERE state = 'pending'`)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	start := time.Now()
	var deps []uuid.UUID
	for range deployments {
		dep := id.New()
		if _, err := c.pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at)
			VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3, now())`, dep, c.project, c.image); err != nil {
			t.Fatal(err)
		}
		// Enqueued twice, as a retried webhook or the sweep would: still once.
		for range 2 {
			if _, err := inserter.Enqueue(ctx, operator.DeployTask{DeploymentID: dep}); err != nil {
				t.Fatal(err)
			}
		}
		deps = append(deps, dep)
	}
	for {
		var done int
		c.pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE status IN ('active', 'retiring', 'stopped')`).Scan(&done)
		if done == deployments {
			break
		}
		var failed int
		c.pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE status = 'failed'`).Scan(&failed)
		if failed > 0 || time.Since(start) > 2*time.Minute {
			t.Fatalf("%d of %d deployments done, %d failed", done, deployments, failed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d deployments placed and activated by 3 operators in %s", deployments, time.Since(start).Round(time.Millisecond))

	q := db.New(c.pool)
	for _, dep := range deps {
		ins, err := q.InstanceListByDeployment(ctx, dep)
		if err != nil {
			t.Fatal(err)
		}
		onNode := map[uuid.UUID]bool{}
		for _, in := range ins {
			onNode[in.NodeID] = true
		}
		if len(ins) != 3 || len(onNode) != 3 {
			t.Fatalf("deployment %s has %d instances on %d nodes, want 3 on 3", dep, len(ins), len(onNode))
		}
	}
	// Capacity accounting agrees with what was placed.
	var mismatched int
	c.pool.QueryRow(ctx, `
		SELECT count(*) FROM nodes n
		WHERE n.cpu_millis - n.free_cpu_millis <> coalesce((SELECT sum((cpu_millis + 3) / 4) FROM instances i WHERE i.node_id = n.id), 0) -- node.CPURequest`).Scan(&mismatched)
	if mismatched != 0 {
		t.Fatalf("%d nodes whose reserved CPU does not match their instances", mismatched)
	}
}
