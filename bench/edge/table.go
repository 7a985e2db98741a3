package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// tableSize is the route table measured in this process: heap after a
// build, and the build alone (NewTable, its input already in memory).
type tableSize struct {
	projects, hosts int
	heapMiB         float64
	build           time.Duration // median of three builds
}

// measureTable builds the table the edge holds for n projects with three
// instances each, one per node, as loadProjects writes them to the
// database (each row's node address a string of its own, as the edge scans
// them). (BenchmarkBuildTable100kHosts in internal/edge meant to report
// the heap too, but its MiB-table metric is dropped: b.Loop's first call
// resets the timer, which clears metrics reported before it.)
func measureTable(n int, nodes []string) tableSize {
	projects := make([]edge.Project, n)
	instances := make([]edge.Instance, 0, 3*n)
	for i := range projects {
		projects[i] = edge.Project{ID: id.New(), Slug: fmt.Sprintf("bulk-%d", i), ActiveDeploymentID: id.New()}
		for _, node := range nodes {
			instances = append(instances, edge.Instance{ProjectID: projects[i].ID, DeploymentID: projects[i].ActiveDeploymentID, InstanceID: uuid.New(), NodeProxy: strings.Clone(node)})
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	tbl := edge.NewTable(appsDomain, projects, instances, nil)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	s := tableSize{projects: n, hosts: tbl.Hosts(), heapMiB: (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / (1 << 20)}
	runtime.KeepAlive(tbl)
	tbl = nil

	var builds []float64
	for range 3 {
		runtime.GC()
		start := time.Now()
		edge.NewTable(appsDomain, projects, instances, nil)
		builds = append(builds, float64(time.Since(start)))
	}
	s.build = time.Duration(median(builds))
	return s
}

// rebuild is what one route rebuild costs the edge, measured in this
// process with the edge's own Syncer against the benchmark's database.
type rebuild struct {
	sync          time.Duration // read the database, build, store: median of three
	snapshot      time.Duration // write the snapshot of that table: median of three
	snapshotBytes int64
}

// measureRebuild times the parts of a rebuild the edge does on every
// route change: Syncer.Sync without a snapshot, then SaveSnapshot alone.
func measureRebuild(ctx context.Context, pool *pgxpool.Pool, dir string) (rebuild, error) {
	routes := &edge.Routes{}
	s := &edge.Syncer{Pool: pool, Routes: routes, AppsDomain: appsDomain, Log: zlog.Discard()}
	path := filepath.Join(dir, "rebuild-routes.json")
	var syncs, snaps []float64
	for range 3 {
		start := time.Now()
		if err := s.Sync(ctx); err != nil {
			return rebuild{}, err
		}
		syncs = append(syncs, float64(time.Since(start)))
		start = time.Now()
		if err := edge.SaveSnapshot(path, routes.Load()); err != nil {
			return rebuild{}, err
		}
		snaps = append(snaps, float64(time.Since(start)))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return rebuild{}, err
	}
	return rebuild{sync: time.Duration(median(syncs)), snapshot: time.Duration(median(snaps)), snapshotBytes: fi.Size()}, nil
}
