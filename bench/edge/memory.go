package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/benchdb"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// memoryRun is one edge process routing the at-scale projects: its
// resident memory once it serves them, after a full rebuild from the
// database, and its peak (VmHWM), all in KiB.
type memoryRun struct {
	start, rebuilt, peak int64
	// Then under wrk for -duration (Host: the last project loaded): its
	// rate, CPU per request and memory at the end.
	load      wrkRun
	loadedRSS int64
}

// runMemory is the -memory mode: the route table at scale, alone. It
// loads o.hosts projects, times a full rebuild, the snapshot write and its
// restore in this process, then starts the edge o.rounds times (each a
// fresh process, the environment of -memory-env on top of the bench's)
// and reads its memory from /proc after it served the projects and after a
// full rebuild (NOTIFY with no project id, as a reconnect does).
func runMemory(ctx context.Context, o options) error {
	work, err := os.MkdirTemp("", "zw-bench-edge-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dbURL, dropDB, err := benchdb.Create(ctx, o.zeitwork, o.adminURL, "edgemem")
	if err != nil {
		return err
	}
	defer dropDB()
	backend, addrs, err := startApp(o, filepath.Join(work, "app"), 3)
	if err != nil {
		return err
	}
	defer backend.stop()
	w, err := newWorld(ctx, dbURL, addrs, filepath.Join(work, "nodes"))
	if err != nil {
		return err
	}
	defer w.close()
	start := time.Now()
	if err := w.loadProjects(ctx, o.hosts); err != nil {
		return fmt.Errorf("load %d projects: %w", o.hosts, err)
	}
	fmt.Fprintf(os.Stderr, "bench/edge: %d projects loaded in %s\n", o.hosts, time.Since(start).Round(time.Millisecond))

	rb, err := measureRebuild(ctx, w.pool, work)
	if err != nil {
		return err
	}
	heap, err := measureHeap(ctx, w)
	if err != nil {
		return err
	}
	if o.memProfile != "" {
		// What one more full rebuild allocates, by where.
		runtime.MemProfileRate = 64 << 10
		s := &edge.Syncer{Pool: w.pool, Routes: &edge.Routes{}, AppsDomain: appsDomain, Log: zlog.Discard()}
		if err := s.Sync(ctx); err != nil {
			return err
		}
		f, err := os.Create(o.memProfile)
		if err != nil {
			return err
		}
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
		if err != nil {
			return err
		}
	}
	var restores []float64
	snap := filepath.Join(work, "rebuild-routes.json")
	for range 3 {
		start := time.Now()
		t, err := edge.LoadSnapshot(snap)
		if err != nil {
			return err
		}
		restores = append(restores, float64(time.Since(start)))
		if t.Hosts() < 2*o.hosts {
			return fmt.Errorf("snapshot restored %d names, want at least %d", t.Hosts(), 2*o.hosts)
		}
	}

	var env []string
	if o.memoryEnv != "" {
		env = strings.Fields(o.memoryEnv)
	}
	var runs []memoryRun
	for i := range o.rounds {
		r, err := memoryOnce(ctx, o, w, dbURL, filepath.Join(work, fmt.Sprintf("edge-%d.routes", i)), env)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench/edge: run %d: RSS %d MiB serving, %d MiB after a full rebuild, peak %d MiB; under wrk %.0f req/s, %s CPU/request, RSS %d MiB\n",
			i+1, r.start>>10, r.rebuilt>>10, r.peak>>10, r.load.rps, us(r.load.cpuPerReq), r.loadedRSS>>10)
		runs = append(runs, r)
	}

	fi, err := os.Stat(snap)
	if err != nil {
		return err
	}
	mmm := func(f func(memoryRun) int64) string {
		v := make([]int64, len(runs))
		for i, r := range runs {
			v[i] = f(r) >> 10
		}
		slices.Sort(v)
		return fmt.Sprintf("%d / %d / %d MiB", v[0], v[len(v)/2], v[len(v)-1])
	}
	fmt.Printf("Route table at %s projects × 3 instances (%d edge runs, min / median / max; environment: %q)\n\n", thousands(float64(o.hosts)), len(runs), o.memoryEnv)
	fmt.Println("| | edge |")
	fmt.Println("|---|---:|")
	fmt.Printf("| edge RSS serving them (after the first rebuild) | %s |\n", mmm(func(r memoryRun) int64 { return r.start }))
	fmt.Printf("| edge RSS after a full rebuild | %s |\n", mmm(func(r memoryRun) int64 { return r.rebuilt }))
	fmt.Printf("| edge peak RSS (VmHWM) | %s |\n", mmm(func(r memoryRun) int64 { return r.peak }))
	fmt.Printf("| then under wrk for %s: RSS at the end | %s |\n", o.duration, mmm(func(r memoryRun) int64 { return r.loadedRSS }))
	fmt.Printf("| the same: requests/s | %s |\n", mmmF(runs, func(r memoryRun) float64 { return r.load.rps }, thousands))
	fmt.Printf("| the same: edge CPU per request | %s |\n", mmmF(runs, func(r memoryRun) float64 { return float64(r.load.cpuPerReq) }, func(v float64) string { return us(time.Duration(v)) }))
	fmt.Printf("| full rebuild in this process: read + build + swap (median of 3) | %s |\n", ms(rb.sync))
	fmt.Printf("| in this process: live heap of the table / allocated by one full rebuild | %.1f MiB / %.1f MiB |\n", heap.live, heap.perRebuild)
	fmt.Printf("| snapshot: size / write / restore (medians of 3) | %.1f MiB / %s / %s |\n", float64(fi.Size())/(1<<20), ms(rb.snapshot), ms(time.Duration(median(restores))))
	return nil
}

func memoryOnce(ctx context.Context, o options, w *world, dbURL, snapshot string, env []string) (memoryRun, error) {
	p, addr, metrics, err := startEdgeEnv(o.zeitwork, dbURL, snapshot, "fast", env...)
	if err != nil {
		return memoryRun{}, err
	}
	defer p.stop()
	px := proxy{name: edgeFast, addr: addr, p: p}
	if err := waitServes(ctx, px, w.lastHost); err != nil {
		return memoryRun{}, err
	}
	// Settled: the snapshot of the first table written, the garbage of
	// the rebuild collected and returned as the runtime does by itself.
	if err := waitSnapshot(ctx, snapshot, time.Time{}); err != nil {
		return memoryRun{}, err
	}
	time.Sleep(5 * time.Second)
	var r memoryRun
	r.start = procStatus(p.pid(), "VmRSS")
	before, err := routeUpdates(metrics)
	if err != nil {
		return memoryRun{}, err
	}
	written := time.Now()
	if _, err := w.pool.Exec(ctx, `SELECT pg_notify('zeitwork_routes', 'all')`); err != nil {
		return memoryRun{}, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := routeUpdates(metrics)
		if err != nil {
			return memoryRun{}, err
		}
		if n > before {
			break
		}
		if time.Now().After(deadline) {
			return memoryRun{}, fmt.Errorf("edge never rebuilt its routes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := waitSnapshot(ctx, snapshot, written); err != nil {
		return memoryRun{}, err
	}
	time.Sleep(5 * time.Second)
	r.rebuilt = procStatus(p.pid(), "VmRSS")
	r.peak = procStatus(p.pid(), "VmHWM")
	if r.load, err = runWrk(ctx, o, px, w.lastHost, o.duration); err != nil {
		return memoryRun{}, err
	}
	r.loadedRSS = procStatus(p.pid(), "VmRSS")
	return r, p.alive()
}

// waitSnapshot waits for the edge to write its snapshot after since.
func waitSnapshot(ctx context.Context, path string, since time.Time) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if fi, err := os.Stat(path); err == nil && fi.ModTime().After(since) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edge never wrote its snapshot %s", path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// routeUpdates is the edge's count of successful route rebuilds.
func routeUpdates(metrics string) (float64, error) {
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `zeitwork_edge_route_updates_total{result="ok"} `); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	return 0, sc.Err()
}

// procStatus is a field of /proc/<pid>/status in KiB (0 if unknown).
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// heapUse is the route table's heap in this process, from the database.
type heapUse struct{ live, perRebuild float64 } // MiB

// measureHeap rebuilds from the database with the edge's Syncer: the live
// heap the table adds, and what one more full rebuild allocates in all.
func measureHeap(ctx context.Context, w *world) (heapUse, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	routes := &edge.Routes{}
	s := &edge.Syncer{Pool: w.pool, Routes: routes, AppsDomain: appsDomain, Log: zlog.Discard()}
	if err := s.Sync(ctx); err != nil {
		return heapUse{}, err
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	h := heapUse{live: (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / (1 << 20)}
	if err := s.Sync(ctx); err != nil {
		return heapUse{}, err
	}
	var again runtime.MemStats
	runtime.ReadMemStats(&again)
	h.perRebuild = float64(again.TotalAlloc-after.TotalAlloc) / (1 << 20)
	runtime.KeepAlive(routes)
	return h, nil
}

// mmmF is min / median / max of f over runs, each formatted by format.
func mmmF(runs []memoryRun, f func(memoryRun) float64, format func(float64) string) string {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return format(v[0]) + " / " + format(v[len(v)/2]) + " / " + format(v[len(v)-1])
}
