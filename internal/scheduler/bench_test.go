package scheduler_test

import (
	"bytes"
	"cmp"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

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

// benchLargeCluster is n nodes over three regions with the same mix of dead,
// draining and stale nodes as benchCluster.
func benchLargeCluster(n int) *schedulertest.Cluster {
	c := schedulertest.New()
	for i := range n {
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

// benchPlaceOne times each placement of one deployment on a 10,000-node
// cluster separately, consuming capacity between them, and reports the
// latency percentiles: the goal is "one deployment placed on a 10k-node
// cluster under 1 ms p99", which a mean per deployment would hide.
//
// Two clocks: wall time, which on a shared 2-core machine mostly measures
// the other processes, and the thread's CPU time (the goroutine is locked to
// its thread), which is the placement's own cost and what a quiet operator
// would see.
func benchPlaceOne(b *testing.B, place placeFunc) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := benchLargeCluster(10000)
	reqs := benchRequests(c)
	var wall, cpu []time.Duration
	i := 0
	for b.Loop() {
		req := reqs[i%len(reqs)]
		i++
		start, startCPU := time.Now(), threadCPU(b)
		ps, err := place(c.Nodes(), req)
		wall, cpu = append(wall, time.Since(start)), append(cpu, threadCPU(b)-startCPU)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Apply(req, ps); err != nil {
			b.Fatal(err)
		}
	}
	report := func(d []time.Duration, clock string) {
		slices.Sort(d)
		at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
		b.ReportMetric(at(0.50), clock+"-p50-µs")
		b.ReportMetric(at(0.99), clock+"-p99-µs")
		b.ReportMetric(at(1), clock+"-max-µs")
	}
	report(wall, "wall")
	report(cpu, "cpu")
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

func BenchmarkPlaceOneOn10kNodes(b *testing.B) {
	benchPlaceOne(b, scheduler.Place)
}

// BenchmarkPlaceOneOn10kNodesNaive is the reference for
// BenchmarkPlaceOneOn10kNodes: a full sort of the eligible nodes per instance.
func BenchmarkPlaceOneOn10kNodesNaive(b *testing.B) {
	benchPlaceOne(b, naivePlace)
}
