package scheduler_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/scheduler"
	"github.com/zeitwork/zeitwork/internal/scheduler/schedulertest"
)

// nodesOf returns the node IDs of a plan, in order.
func nodesOf(ps []scheduler.Placement) []uuid.UUID {
	ids := make([]uuid.UUID, len(ps))
	for i, p := range ps {
		ids[i] = p.NodeID
	}
	return ids
}

// perNode counts instances per node.
func perNode(ps []scheduler.Placement) map[uuid.UUID]int {
	m := map[uuid.UUID]int{}
	for _, p := range ps {
		m[p.NodeID]++
	}
	return m
}

func TestPlace(t *testing.T) {
	type want struct {
		nodes   []int       // indexes of the added nodes, in plan order; nil with perNode set: order not asserted
		perNode map[int]int // instances per node index
		err     []string    // substrings of a *CannotPlace message
	}
	tests := []struct {
		name  string
		build func(c *schedulertest.Cluster) []uuid.UUID
		req   func(c *schedulertest.Cluster, ids []uuid.UUID) scheduler.Request
		want  want
	}{
		{
			name: "three instances on distinct nodes, most free first",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{
					c.Add(2000, 2048), c.Add(8000, 8192), c.Add(4000, 4096), c.Add(1000, 1024), c.Add(6000, 6144),
				}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 500, 512) },
			want: want{nodes: []int{1, 4, 2}},
		},
		{
			name: "score weighs CPU and memory normalised, not by unit",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				// Node 0's raw sum (21000) beats the others' (20000), but it
				// has an eighth of their CPU and not twice their memory.
				return []uuid.UUID{c.Add(1000, 20000), c.Add(8000, 12000), c.Add(8000, 12000), c.Add(8000, 12000)}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 100, 100) },
			want: want{nodes: []int{1, 2, 3}},
		},
		{
			name: "ties broken by fewer instances, then node ID",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{
					c.Add(4000, 4096, schedulertest.Instances(5)), c.Add(4000, 4096, schedulertest.Instances(2)),
					c.Add(4000, 4096, schedulertest.Instances(2)), c.Add(4000, 4096, schedulertest.Instances(1)),
				}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 500, 512) },
			want: want{nodes: []int{3, 1, 2}},
		},
		{
			name: "never dead, draining, stale or wrong-region nodes",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{
					c.Add(64000, 65536, schedulertest.Dead()),
					c.Add(64000, 65536, schedulertest.Draining()),
					c.Add(64000, 65536, schedulertest.Stale()),
					c.Add(64000, 65536, schedulertest.Region("us-east-1")),
					c.Add(1000, 1024), c.Add(1000, 1024), c.Add(1000, 1024),
				}
			},
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Region = schedulertest.DefaultRegion
				return r
			},
			want: want{nodes: []int{4, 5, 6}},
		},
		{
			name: "heartbeat exactly at the deadline is still fresh",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				ids := c.AddN(3, 1000, 1024)
				return ids
			},
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Now = r.Now.Add(r.HeartbeatDeadline)
				return r
			},
			want: want{nodes: []int{0, 1, 2}},
		},
		{
			name: "capacity is consumed within one call",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				// Node 0 is the best by far but holds one instance; node 1 holds two.
				return []uuid.UUID{c.Add(1500, 60000), c.Add(2000, 2048)}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 1000, 1024) },
			want: want{perNode: map[int]int{0: 1, 1: 2}},
		},
		{
			name: "spreads evenly over two nodes",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{c.Add(16000, 16384), c.Add(8000, 8192)}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(6, 500, 512) },
			want: want{nodes: []int{0, 1, 0, 1, 0, 1}},
		},
		{
			name: "odd count over two nodes: the extra goes to the better node",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{c.Add(4000, 4096), c.Add(8000, 8192)}
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 500, 512) },
			want: want{nodes: []int{1, 0, 1}},
		},
		{
			name: "avoid honoured when other nodes exist",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{c.Add(16000, 16384), c.Add(16000, 16384), c.Add(1000, 1024), c.Add(1000, 1024)}
			},
			req: func(c *schedulertest.Cluster, ids []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Existing = 1
				r.Avoid = []uuid.UUID{ids[0], ids[1]}
				return r
			},
			want: want{nodes: []int{2, 3}},
		},
		{
			name: "avoid ignored only for what the other nodes cannot take",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{c.Add(16000, 16384), c.Add(8000, 8192), c.Add(1000, 1024)}
			},
			req: func(c *schedulertest.Cluster, ids []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Existing = 1
				r.Avoid = []uuid.UUID{ids[0], ids[1]}
				return r
			},
			want: want{nodes: []int{2, 0}},
		},
		{
			name: "existing instances reduce the count",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return c.AddN(5, 4000, 4096)
			},
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(4, 500, 512)
				r.Existing = 3
				return r
			},
			want: want{nodes: []int{0}},
		},
		{
			name:  "existing covers the replicas: nothing to place",
			build: func(c *schedulertest.Cluster) []uuid.UUID { return nil },
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Existing = 4
				return r
			},
			want: want{nodes: []int{}},
		},
		{
			name: "one replica is raised to three",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return c.AddN(4, 4000, 4096)
			},
			req:  func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(1, 500, 512) },
			want: want{nodes: []int{0, 1, 2}},
		},
		{
			name: "cannot place: counts every reason",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{
					c.Add(200, 4096), // too little CPU
					c.Add(4000, 256), // too little memory
					c.Add(800, 1024), // room for 1
					c.Add(8000, 8192, schedulertest.Dead()),
					c.Add(8000, 8192, schedulertest.Draining()),
					c.Add(8000, 8192, schedulertest.Draining()),
					c.Add(8000, 8192, schedulertest.Stale()),
					c.Add(8000, 8192, schedulertest.Region("us-east-1")),
				}
			},
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Region = schedulertest.DefaultRegion
				return r
			},
			want: want{err: []string{
				"cannot place 3 instances of 500m CPU / 512 MiB in region eu-central-1",
				"1 of 8 nodes has room, for 1 instance",
				"1 dead", "2 draining", "1 heartbeat stale", "1 in another region",
				"1 too little CPU", "1 too little memory", "most free: 4000m CPU, 4096 MiB",
			}},
		},
		{
			name: "cannot place: replacement names running count",
			build: func(c *schedulertest.Cluster) []uuid.UUID {
				return []uuid.UUID{c.Add(500, 512)}
			},
			req: func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request {
				r := c.Request(3, 500, 512)
				r.Existing = 1
				return r
			},
			want: want{err: []string{"cannot place 2 instances", "(3 replicas, 1 running)", "1 of 1 node has room, for 1 instance"}},
		},
		{
			name:  "cannot place: empty cluster",
			build: func(c *schedulertest.Cluster) []uuid.UUID { return nil },
			req:   func(c *schedulertest.Cluster, _ []uuid.UUID) scheduler.Request { return c.Request(3, 500, 512) },
			want:  want{err: []string{"cannot place 3 instances of 500m CPU / 512 MiB: there are no nodes"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := schedulertest.New()
			ids := tt.build(c)
			req := tt.req(c, ids)
			got, err := scheduler.Place(c.Nodes(), req)

			if tt.want.err != nil {
				var cp *scheduler.CannotPlace
				if !errors.As(err, &cp) {
					t.Fatalf("Place() = %v, %v; want *CannotPlace", nodesOf(got), err)
				}
				if got != nil {
					t.Errorf("Place() returned %d placements with an error; want none", len(got))
				}
				for _, s := range tt.want.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q\n  does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Place() error: %v", err)
			}
			if err := c.Check(req, got); err != nil {
				t.Fatalf("plan breaks a rule: %v", err)
			}
			if tt.want.nodes != nil {
				want := make([]uuid.UUID, len(tt.want.nodes))
				for i, j := range tt.want.nodes {
					want[i] = ids[j]
				}
				if g := nodesOf(got); !equal(g, want) {
					t.Errorf("Place() nodes = %v\n  want %v", index(ids, g), tt.want.nodes)
				}
			}
			if tt.want.perNode != nil {
				gotPer := perNode(got)
				for j, n := range tt.want.perNode {
					if gotPer[ids[j]] != n {
						t.Errorf("node %d has %d instances, want %d (plan %v)", j, gotPer[ids[j]], n, index(ids, nodesOf(got)))
					}
				}
			}
		})
	}
}

func TestPlaceInvalidRequest(t *testing.T) {
	c := schedulertest.New()
	c.AddN(3, 4000, 4096)
	tests := []struct {
		name   string
		modify func(r *scheduler.Request)
	}{
		{"zero CPU", func(r *scheduler.Request) { r.CPUMillis = 0 }},
		{"negative CPU", func(r *scheduler.Request) { r.CPUMillis = -1 }},
		{"zero memory", func(r *scheduler.Request) { r.MemoryMB = 0 }},
		{"negative memory", func(r *scheduler.Request) { r.MemoryMB = -512 }},
		{"negative replicas", func(r *scheduler.Request) { r.Replicas = -1 }},
		{"negative existing", func(r *scheduler.Request) { r.Existing = -1 }},
		{"no clock", func(r *scheduler.Request) { r.Now = time.Time{} }},
		{"no heartbeat deadline", func(r *scheduler.Request) { r.HeartbeatDeadline = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.Request(3, 500, 512)
			tt.modify(&r)
			got, err := scheduler.Place(c.Nodes(), r)
			if !errors.Is(err, scheduler.ErrInvalidRequest) {
				t.Fatalf("Place() = %v, %v; want ErrInvalidRequest", got, err)
			}
			var cp *scheduler.CannotPlace
			if errors.As(err, &cp) {
				t.Errorf("invalid request reported as *CannotPlace: %v", err)
			}
		})
	}
}

func TestPlaceDoesNotModifyNodes(t *testing.T) {
	c := schedulertest.New()
	c.AddN(2, 4000, 4096)
	before := append([]scheduler.Node(nil), c.Nodes()...)
	if _, err := scheduler.Place(c.Nodes(), c.Request(5, 500, 512)); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes() {
		if n != before[i] {
			t.Errorf("node %d changed: %+v -> %+v", i, before[i], n)
		}
	}
}

func TestPlaceHugeReplicasFailsWithoutAllocating(t *testing.T) {
	c := schedulertest.New()
	c.AddN(3, 4000, 4096)
	req := c.Request(1<<40, 1, 1)
	allocs := testing.AllocsPerRun(10, func() {
		_, err := scheduler.Place(c.Nodes(), req)
		var cp *scheduler.CannotPlace
		if !errors.As(err, &cp) {
			t.Fatalf("err = %v, want *CannotPlace", err)
		}
	})
	// A handful of small allocations (candidates, the error), never one
	// sized by Replicas.
	if allocs > 5 {
		t.Errorf("%v allocations", allocs)
	}
}

func equal(a, b []uuid.UUID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// index maps node IDs back to their position in ids, for readable failures.
func index(ids, got []uuid.UUID) []int {
	out := make([]int, len(got))
	for i, g := range got {
		out[i] = -1
		for j, id := range ids {
			if id == g {
				out[i] = j
			}
		}
	}
	return out
}

// TestDevClusterHoldsThreeProjectsThroughARedeploy: `zeitwork dev`'s three
// nodes of 2000m and 4096 MiB, projects of the default size (3 instances of
// 1000m and 512 MiB, whose node reserves the CPU request, 250m:
// node.CPURequest), and every project redeploying at once: each old
// deployment still runs while its new one is placed. All of it fits, spread
// one instance of each deployment per node; at the full limit, placing the
// third project's old deployment would already fail.
func TestDevClusterHoldsThreeProjectsThroughARedeploy(t *testing.T) {
	const request, limit, memory = 250, 1000, 512
	c := schedulertest.New()
	c.AddN(3, 2000, 4096)
	for i := range 3 * 2 { // three projects, old and new deployment
		req := c.Request(3, request, memory)
		ps, err := scheduler.Place(c.Nodes(), req)
		if err != nil {
			t.Fatalf("deployment %d: %v", i+1, err)
		}
		if err := c.Apply(req, ps); err != nil {
			t.Fatalf("deployment %d: %v", i+1, err)
		}
	}
	for _, n := range c.Nodes() {
		if n.Instances != 6 || n.FreeCPUMillis != 500 || n.FreeMemoryMB != 1024 {
			t.Errorf("node %s: %d instances, %dm and %d MiB free; want 6, 500m, 1024 MiB", n.ID, n.Instances, n.FreeCPUMillis, n.FreeMemoryMB)
		}
	}

	full := schedulertest.New()
	full.AddN(3, 2000, 4096)
	placed := 0
	for range 3 {
		req := full.Request(3, limit, memory)
		ps, err := scheduler.Place(full.Nodes(), req)
		if err != nil {
			break
		}
		if err := full.Apply(req, ps); err != nil {
			t.Fatal(err)
		}
		placed++
	}
	if placed != 2 {
		t.Errorf("reserving the full limit placed %d deployments, want 2 (the reason for the request)", placed)
	}
}
