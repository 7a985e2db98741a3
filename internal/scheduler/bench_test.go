package scheduler_test

import (
	"bytes"
	"cmp"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/scheduler"
	"github.com/zeitwork/zeitwork/internal/scheduler/schedulertest"
)

var regions = []string{"eu-central-1", "us-east-1", "ap-southeast-1"}

// benchCluster is 1,000 large nodes over three regions, a few of them dead,
// draining or stale as in a real fleet.
func benchCluster() *schedulertest.Cluster {
	c := schedulertest.New()
	for i := range 1000 {
		opts := []schedulertest.Option{schedulertest.Region(regions[i%len(regions)])}
		switch i % 50 {
		case 7:
			opts = append(opts, schedulertest.Dead())
		case 19:
			opts = append(opts, schedulertest.Draining())
		case 33:
			opts = append(opts, schedulertest.Stale())
		}
		c.Add(64000, 131072, opts...)
	}
	return c
}

// benchRequests is 10,000 deployments of 3 instances in mixed sizes, half of
// them pinned to a region.
func benchRequests(c *schedulertest.Cluster) []scheduler.Request {
	sizes := [][2]int32{{250, 256}, {500, 512}, {1000, 1024}, {2000, 2048}}
	reqs := make([]scheduler.Request, 10000)
	for i := range reqs {
		s := sizes[i%len(sizes)]
		reqs[i] = c.Request(3, s[0], s[1])
		if i%2 == 1 {
			reqs[i].Region = regions[i%len(regions)]
		}
	}
	return reqs
}

type placeFunc func([]scheduler.Node, scheduler.Request) ([]scheduler.Placement, error)

// benchPlace places every deployment in turn and consumes the capacity
// between deployments, as the operator does.
func benchPlace(b *testing.B, place placeFunc) {
	reqs := benchRequests(schedulertest.New())
	placements := 0
	for b.Loop() {
		c := benchCluster()
		for _, req := range reqs {
			ps, err := place(c.Nodes(), req)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Apply(req, ps); err != nil {
				b.Fatal(err)
			}
			placements += len(ps)
		}
	}
	b.ReportMetric(float64(placements)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(placements/3), "ns/deployment")
}

func BenchmarkPlace10kDeploymentsOver1kNodes(b *testing.B) {
	benchPlace(b, scheduler.Place)
}

// BenchmarkPlaceNaive10kDeploymentsOver1kNodes is the reference: the same
// policy, sorting every eligible node for every instance.
func BenchmarkPlaceNaive10kDeploymentsOver1kNodes(b *testing.B) {
	benchPlace(b, naivePlace)
}

// naivePlace is the obvious implementation of the policy for instances on
// distinct nodes: for each instance, filter and sort all nodes, take the
// best one not used yet. It is the benchmark's reference and, where there
// are enough eligible nodes, the property test's oracle. It does not spread
// over too few nodes; it fails instead.
func naivePlace(nodes []scheduler.Node, req scheduler.Request) ([]scheduler.Placement, error) {
	want := max(req.Replicas, scheduler.MinReplicas) - req.Existing
	cutoff := req.Now.Add(-req.HeartbeatDeadline)
	eligible := func(n *scheduler.Node) bool {
		return n.Status == scheduler.StatusActive && !n.LastHeartbeat.Before(cutoff) &&
			(req.Region == "" || n.Region == req.Region) &&
			n.FreeCPUMillis >= req.CPUMillis && n.FreeMemoryMB >= req.MemoryMB
	}
	var maxCPU, maxMem int32
	for i := range nodes {
		if eligible(&nodes[i]) {
			maxCPU = max(maxCPU, nodes[i].FreeCPUMillis)
			maxMem = max(maxMem, nodes[i].FreeMemoryMB)
		}
	}
	// Free CPU/maxCPU + free memory/maxMem after placement, multiplied
	// through by maxCPU*maxMem to stay exact.
	score := func(n *scheduler.Node) int64 {
		return int64(n.FreeCPUMillis-req.CPUMillis)*int64(maxMem) + int64(n.FreeMemoryMB-req.MemoryMB)*int64(maxCPU)
	}
	used := map[uuid.UUID]bool{}
	var out []scheduler.Placement
	for range want {
		var cands []*scheduler.Node
		for i := range nodes {
			if n := &nodes[i]; eligible(n) && !used[n.ID] {
				cands = append(cands, n)
			}
		}
		if len(cands) == 0 {
			return nil, &scheduler.CannotPlace{}
		}
		slices.SortFunc(cands, func(a, b *scheduler.Node) int {
			if aa, ba := slices.Contains(req.Avoid, a.ID), slices.Contains(req.Avoid, b.ID); aa != ba {
				if ba {
					return -1
				}
				return 1
			}
			if sa, sb := score(a), score(b); sa != sb {
				return cmp.Compare(sb, sa)
			}
			if a.Instances != b.Instances {
				return a.Instances - b.Instances
			}
			return bytes.Compare(a.ID[:], b.ID[:])
		})
		used[cands[0].ID] = true
		out = append(out, scheduler.Placement{NodeID: cands[0].ID})
	}
	return out, nil
}
