package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results is everything the benchmark measured.
type results struct {
	load         load
	table        *tableBench // nil: no go test output given
	size         tableSize
	small, large *changes          // large is nil when -hosts is 0
	largeLoad    wrkRun            // the edge under wrk with the large table
	rebuild      rebuild           // with the large table
	half         load              // each proxy, and the backend directly, at halfRate
	halfRate     float64           // half of nginx's median saturation rate
	profiles     map[string]string // "pprof <proxy>" / "perf <proxy>" → its report (empty: none taken)
	names        []string          // the proxies compared, nginx last
	tls, h2      tlsComparison     // the HTTPS comparisons, HTTP/1.1 and HTTP/2 (no rounds: not run)
}

// loadTable prints a table of wrk runs: a column per proxy (median, and
// min–max over the rounds), then each one's ratio to the reference's
// median.
type loadTable struct {
	p      func(string, ...any)
	names  []string
	others []string // every proxy but the reference, each a ratio column
	ref    string
}

func newLoadTable(p func(string, ...any), names []string, ref string, rounds int) *loadTable {
	t := &loadTable{p: p, names: names, ref: ref}
	for _, n := range names {
		if n != ref {
			t.others = append(t.others, n)
		}
	}
	p("| median (min–max) of %d rounds | %s |", rounds, strings.Join(names, " | "))
	for _, n := range t.others {
		p(" %s / %s |", n, ref)
	}
	p("\n|---|%s\n", strings.Repeat("---:|", len(names)+len(t.others)))
	return t
}

func (t *loadTable) row(what string, ld load, field func(wrkRun) float64, format func(float64) string) {
	var cells []string
	for _, n := range t.names {
		lo, mid, hi := ld.spread(n, field)
		cells = append(cells, fmt.Sprintf("%s (%s–%s)", format(mid), format(lo), format(hi)))
	}
	ref := ld.median(t.ref, field)
	for _, n := range t.others {
		cells = append(cells, fmt.Sprintf("%.2f", ld.median(n, field)/ref))
	}
	t.p("| %s | %s |\n", what, strings.Join(cells, " | "))
}

// saturation prints the rows of a load at saturation, which client (wrk
// or h2load) made.
func (t *loadTable) saturation(l load, client string) {
	fms := func(v float64) string { return ms(time.Duration(v)) }
	fus := func(v float64) string { return us(time.Duration(v)) }
	count := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	t.row("requests/s at saturation", l, func(w wrkRun) float64 { return w.rps }, thousands)
	if client == "h2load" { // no percentiles: p50 holds the mean
		t.row("latency mean at saturation", l, func(w wrkRun) float64 { return float64(w.p50) }, fms)
	} else {
		t.row("latency p50 at saturation", l, func(w wrkRun) float64 { return float64(w.p50) }, fms)
		t.row("latency p99 at saturation", l, func(w wrkRun) float64 { return float64(w.p99) }, fms)
	}
	t.row("proxy CPU time per request (user + system, all its processes)", l, func(w wrkRun) float64 { return float64(w.cpuPerReq) }, fus)
	t.row("proxy context switches per request (all its threads)", l, func(w wrkRun) float64 { return w.switchesPerReq }, count)
	t.row("backend CPU time per request", l, func(w wrkRun) float64 { return float64(w.backendCPUPerReq) }, fus)
	t.row("backend context switches per request", l, func(w wrkRun) float64 { return w.backendSwitchesPerReq }, count)
	t.row(client+" CPU time per request", l, func(w wrkRun) float64 { return float64(w.wrkCPUPerReq) }, fus)
	t.row("proxy + backend + "+client+" CPU time per request", l, func(w wrkRun) float64 { return float64(w.cpuPerReq + w.backendCPUPerReq + w.wrkCPUPerReq) }, fus)
	t.row("machine CPU idle at saturation", l, func(w wrkRun) float64 { return w.idle }, func(v float64) string { return fmt.Sprintf("%.0f %%", 100*v) })
	t.row("wake-up interrupts per request (RES + CAL, all CPUs)", l, func(w wrkRun) float64 { return w.ipisPerReq }, count)
}

// rounds prints each round of a load at saturation, in the order run,
// then each proxy's ratios to ref round by round: the runs of one round
// are minutes apart at most, so a host's slower hour weighs on both.
func rounds(p func(string, ...any), l load, names []string, ref, client string) {
	latency, pick := "p99", func(w wrkRun) time.Duration { return w.p99 }
	if client == "h2load" {
		latency, pick = "mean", func(w wrkRun) time.Duration { return w.p50 }
	}
	p("\nRounds at saturation (the order rotates):\n\n| round | order |")
	for _, n := range names {
		p(" %s req/s, %s, CPU/req |", n, latency)
	}
	p("\n|---|---|%s\n", strings.Repeat("---:|", len(names)))
	for i, round := range l.rounds {
		var cells []string
		for _, n := range names {
			w := round[n]
			cells = append(cells, fmt.Sprintf("%s, %s, %s", thousands(w.rps), ms(pick(w)), us(w.cpuPerReq)))
		}
		p("| %d | %s | %s |\n", i+1, strings.Join(l.order[i], " → "), strings.Join(cells, " | "))
	}
	if len(l.rounds) < 2 {
		return
	}
	p("\nRound by round against %s (min–median–max of the %d rounds' ratios):\n\n", ref, len(l.rounds))
	for _, n := range names {
		if n == ref {
			continue
		}
		rate := l.ratios(n, ref, func(w wrkRun) float64 { return w.rps })
		cpu := l.ratios(n, ref, func(w wrkRun) float64 { return float64(w.cpuPerReq) })
		ahead := 0
		for _, r := range rate {
			if r >= 1 {
				ahead++
			}
		}
		p("- %s: requests/s %s×, at or above in %d of %d rounds; CPU per request %s×\n", n, spreadOf(rate), ahead, len(rate), spreadOf(cpu))
	}
}

// pathWhat says what each of the edge's data paths is.
var pathWhat = map[string]string{
	"stdlib": "net/http + httputil.ReverseProxy",
	"fast":   "internal/edge's own HTTP/1.1 forwarding loop, a goroutine per connection",
	"loop":   "the same exchange on epoll event loops, one per core",
}

// spreadOf is "min–median–max" of ratios.
func spreadOf(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f–%.2f–%.2f", slices.Min(v), median(v), slices.Max(v))
}

func report(out io.Writer, o options, r results) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format, args...) }
	if cpus.pinned() {
		p("CPU: %s, %d CPUs (the proxy under test on CPUs %s, wrk and the backend on CPUs %s)\n\n", cpuModel(), runtime.NumCPU(), cpus.proxy, cpus.load)
	} else {
		p("CPU: %s, %d CPUs (wrk, the proxy under test and the backend share them)\n\n", cpuModel(), runtime.NumCPU())
	}

	l := r.load
	names := r.names
	var t *loadTable
	if len(l.rounds) > 0 {
		t = newLoadTable(p, names, "nginx", len(l.rounds))
		t.saturation(l, "wrk")
	}
	if len(r.half.rounds) > 0 {
		h := r.half
		row, others := t.row, t.others
		rps := func(w wrkRun) float64 { return w.rps }
		p99 := func(w wrkRun) float64 { return float64(w.p99) }
		cpu := func(w wrkRun) float64 { return float64(w.cpuPerReq) }
		fms := func(v float64) string { return ms(time.Duration(v)) }
		fus := func(v float64) string { return us(time.Duration(v)) }
		row(fmt.Sprintf("requests/s offered at half of nginx's saturation (%s/s target, %d connections)", thousands(r.halfRate), h.conns), h, rps, thousands)
		row("latency p99 at half load", h, p99, fms)
		row("proxy CPU time per request at half load", h, cpu, fus)
		d := h.median("direct", p99)
		var cells []string
		for _, n := range names {
			cells = append(cells, fms(h.median(n, p99)-d))
		}
		p("| added p99 at half load (p99 through the proxy − p99 of the backend asked directly, %s) | %s |%s\n",
			fms(d), strings.Join(cells, " | "), strings.Repeat(" — |", len(others)))
	}
	if len(r.tls.load.rounds) > 0 {
		p("\nOver TLS (HTTPS, HTTP/1.1 with keep-alive; each proxy terminates TLS with the same ECDSA P-256 certificate):\n\n")
		newLoadTable(p, r.tls.names, nginxTLS, len(r.tls.load.rounds)).saturation(r.tls.load, "wrk")
		rounds(p, r.tls.load, r.tls.names, nginxTLS, "wrk")
		profileTops(p, r.tls, o.profile)
	}
	if len(r.h2.load.rounds) > 0 {
		p("\nOver HTTP/2 (h2load, one stream at a time on each of %d connections; latency is h2load's mean, it gives no percentiles):\n\n", o.conns)
		newLoadTable(p, r.h2.names, nginxH2, len(r.h2.load.rounds)).saturation(r.h2.load, "h2load")
		rounds(p, r.h2.load, r.h2.names, nginxH2, "h2load")
		for _, n := range r.h2.names {
			p("\n%s negotiated %s.", n, r.h2.ciphers[n])
		}
		p("\n")
		profileTops(p, r.h2, o.profile)
	}
	if len(l.rounds) == 0 {
		reportProblems(p, r) // over TLS and HTTP/2 alone
		return
	}
	p("\n| | %s | — | — |\n|---|---:|---:|---:|\n", names[0])
	if t := r.table; t != nil {
		p("| route lookup, 100,000 projects, host as sent / needing normalisation (BenchmarkLookup100kHosts) | %.0f ns, %.0f allocs / %.0f ns, %.0f allocs | — | — |\n", t.lookupNs, t.lookupAllocs, t.mixedNs, t.mixedAllocs)
		p("| route table build, 100,000 projects × 3 instances (BenchmarkBuildTable100kHosts) | %s, %.0f MiB | — | — |\n", ms(time.Duration(t.buildNs)), t.tableMiB)
	}
	p("| route table, %s projects × 3 instances (%s host names): build (NewTable alone) / heap | %s / %.0f MiB | — | — |\n",
		thousands(float64(r.size.projects)), thousands(float64(r.size.hosts)), ms(r.size.build), r.size.heapMiB)
	change := func(what string, c *changes) {
		p("| %s: p50 / p99 / max (N=%d) | %s / %s / %s | — | — |\n", what, len(c.add),
			ms(percentile(c.add, 50)), ms(percentile(c.add, 99)), ms(percentile(c.add, 100)))
	}
	removal := func(what string, c *changes) {
		p("| %s: p50 / p99 / max (N=%d) | %s / %s / %s | — | — |\n", what, len(c.remove),
			ms(percentile(c.remove, 50)), ms(percentile(c.remove, 99)), ms(percentile(c.remove, 100)))
	}
	change("route change → edge (domain added), 1 project", r.small)
	removal("route change → edge (domain deleted), 1 project", r.small)
	if r.large != nil {
		change(fmt.Sprintf("route change → edge (domain added), %s projects", thousands(float64(o.hosts))), r.large)
		removal(fmt.Sprintf("route change → edge (domain deleted), %s projects", thousands(float64(o.hosts))), r.large)
		p("| one route rebuild, %s projects: read + build + swap / snapshot (%d MiB) | %s / %s | — | — |\n",
			thousands(float64(o.hosts)), r.rebuild.snapshotBytes>>20, ms(r.rebuild.sync), ms(r.rebuild.snapshot))
		p("| requests/s / proxy CPU per request with %s projects routed (one run) | %s / %s | — | — |\n", thousands(float64(o.hosts)), thousands(r.largeLoad.rps), us(r.largeLoad.cpuPerReq))
		p("| edge memory (RSS), 1 project / %s projects | %d MiB / %d MiB | — | — |\n", thousands(float64(o.hosts)), r.small.rss>>10, r.large.rss>>10)
	} else {
		p("| edge memory (RSS), 1 project | %d MiB | — | — |\n", r.small.rss>>10)
	}

	rounds(p, l, names, "nginx", "wrk")
	reportProblems(p, r)
	for _, n := range names {
		if top, ok := r.profiles["pprof "+n]; ok {
			p("\nWhere %s's CPU goes (pprof -top, one saturated run; the profile is in %s):\n\n```\n%s```\n", n, o.profile, top)
		}
	}
	for _, n := range names {
		if top, ok := r.profiles["pprof-half "+n]; ok {
			p("\nWhere %s's CPU goes at half load (pprof -top, one run at the half-load rate):\n\n```\n%s```\n", n, top)
		}
	}
	for _, n := range names {
		if tab, ok := r.profiles["sched-half "+n]; ok {
			p("\nHow %s's threads were scheduled at half load (perf sched, every thread on the machine, one run):\n\n%s", n, tab)
		}
		if tab, ok := r.profiles["sched "+n]; ok {
			p("\nHow %s's threads were scheduled saturated (perf sched, every thread on the machine, one run):\n\n%s", n, tab)
		}
	}
	for _, n := range names {
		if rep, ok := r.profiles["perf "+n]; ok {
			p("\nWhere %s's CPU goes (perf, kernel included, symbols over 1%%, one saturated run):\n\n```\n%s```\n", n, trimPerf(rep))
		}
	}

	p("\nParameters:\n")
	p("- wrk %s -H 'Host: <project>.%s', same for each proxy; a %s warm-up of each first; %d rounds.\n",
		strings.Join(wrkArgs(o, o.duration), " "), appsDomain, o.warmup, o.rounds)
	p("- Half load: wrk with a delay() of 10 ms between a connection's requests and %d connections, so the offered rate is about half of nginx's median saturation rate whichever proxy answers; the backend asked directly (no proxy) in the same rounds is the reference for added latency.\n", r.half.conns)
	fieldsNote := ""
	if o.fields {
		fieldsNote = " " + nginxHeaders + ": the same nginx also setting the request fields the edge sets (X-Forwarded-Host, X-Forwarded-Proto, X-Request-Id, the node-proxy token, an instance id), so that the app parses as much behind both."
	}
	var paths []string
	for _, path := range o.paths {
		paths = append(paths, "EDGE_DATA_PATH="+path+" ("+pathWhat[path]+")")
	}
	p("- Edge data paths: %s; an edge process for each, on the same routes.\n", strings.Join(paths, ", "))
	if o.fasthttp != "" {
		p("- fasthttp (bare): bench/edge/fasthttpproxy, valyala/fasthttp's Server and an LBClient over the 3 ports, with the same per-request header work as the edge (hop-by-hop and client-address headers dropped, X-Forwarded-*, X-Request-Id) and none of its other guarantees (bodies buffered, no websockets, no passive health): an upper bound for a fasthttp data path.\n")
	}
	if o.app == appNginx {
		p("- Backend (-app nginx): nginx (worker_processes %s) on 3 loopback ports answering %q (%d bytes) from its config (`return 200`), with keep-alive: an app with no Go runtime sharing the cores with a Go proxy.\n", cpus.workers(loadSide), backendBody, len(backendBody))
	} else {
		p("- Backend: one Go process (bench/edge/backend) on 3 loopback ports, answering %q (%d bytes) with keep-alive.\n", backendBody, len(backendBody))
	}
	if cpus.pinned() {
		p("- CPUs: each proxy on CPUs %s only (nginx with worker_processes %s; Go sizes GOMAXPROCS, and so the edge's event loops, by the affinity), wrk and the app on CPUs %s (taskset -c).\n", cpus.proxy, cpus.workers(proxySide), cpus.load)
	}
	p("- Edge: `zeitwork edge`, plain HTTP (EDGE_HTTPS_ADDR=off), EDGE_POLL_INTERVAL=1m. The 3 nodes' internal_address is a backend port, so the edge makes one hop, like nginx; in production the second hop is a node-proxy on each node, not measured here.\n")
	p("- nginx: %s, worker_processes auto, listen reuseport, access_log off, upstream of the same 3 ports with keepalive 64, proxy_http_version 1.1, keepalive_requests 1000000 (client and upstream); the ratio columns are against it.%s\n- CPU and context switches are read from /proc for each process group (the proxy's, the backend's) and from wrk's rusage, over each wrk run; machine idle is /proc/stat's idle + iowait share over the run.\n", nginxVersion(), fieldsNote)
	if r.table != nil {
		p("- Route table: go test -bench 100kHosts -benchmem ./internal/edge/ (medians of %d runs; lookups cycle over all 100,000 project hosts; the build is NewTable from rows already in memory, its heap measured with runtime.MemStats).\n", r.table.runs)
	}
	p("- Route changes: a verified custom domain INSERTed, then DELETEd; the clock runs from the database acknowledging the commit to the edge's first 200 (404 after the delete), asked back to back over one keep-alive connection. Only LISTEN/NOTIFY moves routes (the poll is 1 minute). Percentiles are nearest-rank: with N < 100, p99 is the largest value.\n")
	if r.large != nil {
		p("- At scale: %s more projects written in one transaction, each with an active deployment and 3 healthy instances (%s instances); then ANALYZE (as autovacuum would have done on a cluster that grew over time). A route change rebuilds only the project it names (a copy of the table with that project's names replaced); the full rebuild runs on the poll, on node changes and on reconnects, and the snapshot is written behind, in its own goroutine. The full-rebuild row times the edge's Syncer.Sync and SaveSnapshot in the benchmark process, against the same database.\n",
			thousands(float64(o.hosts)), thousands(float64(3*o.hosts)))
	}
}

// trimPerf keeps perf report's table, without its comment header.
func trimPerf(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

// thousands formats v rounded, with thousands separated by commas.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func nginxVersion() string {
	out, err := exec.Command("nginx", "-v").CombinedOutput()
	if err != nil {
		return "nginx"
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}

// profileTops prints where each edge's CPU went in a comparison over TLS
// (-profile only).
func profileTops(p func(string, ...any), c tlsComparison, dir string) {
	for _, n := range c.names {
		if top, ok := c.profiles["pprof "+n]; ok {
			p("\nWhere %s's CPU goes (pprof -top, one saturated run; the profile is in %s):\n\n```\n%s```\n", n, dir, top)
		}
	}
}

// reportProblems lists what wrk and h2load counted as failed in any run
// (socket errors, non-2xx answers), or says there was none.
func reportProblems(p func(string, ...any), r results) {
	l := r.load
	var problems []string
	for what, ld := range map[string]load{"saturation": l, "half load": r.half, "TLS": r.tls.load, "HTTP/2": r.h2.load} {
		for i, round := range ld.rounds {
			for name, w := range round {
				for _, pr := range w.problems {
					problems = append(problems, fmt.Sprintf("%s round %d %s: %s", what, i+1, name, pr))
				}
			}
		}
	}
	for _, pr := range r.largeLoad.problems {
		problems = append(problems, "edge with many projects: "+pr)
	}
	if len(problems) == 0 {
		p("\nwrk errors: none (no socket errors, no non-2xx answers).\n")
	} else {
		p("\nwrk errors:\n")
		for _, pr := range problems {
			p("- %s\n", pr)
		}
	}
}
