package operator_test

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// BenchmarkReadAndPlaceOn10kNodes is what the operator does for each
// deployment it places: read the schedulable nodes and hand them to the
// scheduler. "table" reads every node row from Postgres, as the operator did
// before node.View; "view" reads the in-memory view (its background refresh
// is not on this path). The scheduler alone is measured in
// internal/scheduler (BenchmarkPlaceOneOn10kNodes).
func BenchmarkReadAndPlaceOn10kNodes(b *testing.B) {
	ctx := context.Background()
	pool := testdb.New(b)
	// 10,000 nodes in one statement: Store.Register looks for a free /64
	// per node, which is right for a real registration and far too slow
	// to set up a benchmark.
	if _, err := pool.Exec(ctx, `
		INSERT INTO nodes (id, hostname, internal_address, cpu_millis, memory_mb, free_cpu_millis, free_memory_mb, ipv6_prefix)
		SELECT gen_random_uuid(), 'w' || i, '100.64.' || (i / 256) || '.' || (i % 256) || ':7000', 64000, 131072, 64000, 131072,
		       ('fd00:' || to_hex(i) || '::/64')::cidr
		FROM generate_series(1, 10000) AS i`); err != nil {
		b.Fatal(err)
	}
	nodes := node.Store{DB: pool}
	view := &node.View{Store: nodes}
	b.Run("table", func(b *testing.B) {
		benchReadAndPlace(b, func() ([]node.Node, error) { return nodes.ListSchedulable(ctx, time.Now().Add(-time.Minute)) })
	})
	b.Run("view", func(b *testing.B) {
		benchReadAndPlace(b, func() ([]node.Node, error) { return view.Nodes(ctx) })
	})
}

// benchReadAndPlace times reading the nodes with read and placing one
// deployment of 3 instances on them.
//
// Besides wall time it reports the thread's CPU time per placement (the
// goroutine is locked to its thread): on a shared 2-core machine the wall
// clock's tail mostly measures the other processes.
func benchReadAndPlace(b *testing.B, read func() ([]node.Node, error)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	place := operator.SchedulerPlacer(time.Minute)
	var readTook, total, cpu []time.Duration
	for b.Loop() {
		start, startCPU := time.Now(), threadCPU(b)
		list, err := read()
		readTook = append(readTook, time.Since(start))
		if err != nil || len(list) < 10000 {
			b.Fatalf("listed %d nodes: %v", len(list), err)
		}
		if _, err := place(list, operator.Need{DeploymentID: id.New(), Instances: 3, CPUMillis: 250, MemoryMB: 256}); err != nil {
			b.Fatal(err)
		}
		total, cpu = append(total, time.Since(start)), append(cpu, threadCPU(b)-startCPU)
	}
	report := func(d []time.Duration, what string) {
		slices.Sort(d)
		at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
		b.ReportMetric(at(0.50), what+"-p50-µs")
		b.ReportMetric(at(0.99), what+"-p99-µs")
	}
	report(readTook, "read")
	report(total, "read+place")
	report(cpu, "cpu-read+place")
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}
