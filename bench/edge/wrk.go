package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/wrk"
)

// wrkRun is what one wrk run measured.
type wrkRun struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	problems []string // socket errors and non-2xx answers, as wrk printed them
	// cpuPerReq is the proxy's CPU time (all its processes, user and
	// system) over the run, per request wrk counted.
	cpuPerReq time.Duration
	// switchesPerReq is the proxy's context switches over the run, all
	// its threads, per request: how often a thread slept or was preempted.
	switchesPerReq float64
	// backendCPUPerReq and wrkCPUPerReq are the same for the backend and
	// for wrk: the two share the machine's cores with the proxy, so a
	// proxy that makes them work harder per request leaves itself fewer
	// cycles at saturation even when its own CPU per request is nginx's.
	backendCPUPerReq, wrkCPUPerReq time.Duration
	backendSwitchesPerReq          float64
	// idle is the share of the machine's CPU time nobody used over the
	// run (from /proc/stat): at saturation, cycles the three left unused.
	idle float64
	// ipisPerReq is the machine's wake-up interrupts (wakeIPIs) over the
	// run, per request: how often a program woke one on a sleeping CPU.
	ipisPerReq float64
}

// load is the throughput comparison: per round, each proxy's run and the
// order they ran in.
type load struct {
	rounds []map[string]wrkRun
	order  [][]string
	conns  int // wrk connections, when not the options'
}

// compare warms the proxies up, then runs wrk against each in turn, the
// order rotating between rounds so none always runs on a machine another
// just heated.
func compare(ctx context.Context, o options, proxies []proxy, host string) (load, error) {
	for _, px := range proxies {
		if _, err := runWrk(ctx, o, px, host, o.warmup); err != nil {
			return load{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var l load
	for r := range o.rounds {
		order := rotate(proxies, r)
		runs := map[string]wrkRun{}
		var names []string
		for _, px := range order {
			run, err := runWrk(ctx, o, px, host, o.duration)
			if err != nil {
				return load{}, fmt.Errorf("round %d: %w", r+1, err)
			}
			for _, p := range run.problems {
				fmt.Fprintf(os.Stderr, "bench/edge: round %d, %s: wrk: %s\n", r+1, px.name, p)
			}
			runs[px.name] = run
			names = append(names, px.name)
		}
		l.rounds = append(l.rounds, runs)
		l.order = append(l.order, names)
	}
	return l, nil
}

func rotate(proxies []proxy, r int) []proxy {
	k := r % len(proxies)
	return append(slices.Clone(proxies[k:]), proxies[:k]...)
}

// halfDelay is wrk's wait between a connection's requests at a set rate.
const halfDelay = 10 * time.Millisecond

// compareAtRate runs each proxy (and the backend directly) at about rate
// requests/s for the same rounds: wrk waits between a connection's
// requests (its delay() hook), so the load is set by the waits, not by how
// fast the proxy answers.
func compareAtRate(ctx context.Context, o options, proxies []proxy, host string, rate float64) (load, error) {
	conns := max(int(rate*halfDelay.Seconds()+0.5), o.threads)
	script, err := os.CreateTemp("", "zw-bench-edge-*.lua")
	if err != nil {
		return load{}, err
	}
	defer os.Remove(script.Name())
	fmt.Fprintf(script, "function delay() return %d end\n", halfDelay.Milliseconds())
	script.Close()
	at := o
	at.conns = conns
	var l load
	for r := range o.rounds {
		runs := map[string]wrkRun{}
		var names []string
		for _, px := range rotate(proxies, r) {
			run, err := runWrk(ctx, at, px, host, o.duration, "-s", script.Name())
			if err != nil {
				return load{}, fmt.Errorf("at %.0f requests/s, round %d: %w", rate, r+1, err)
			}
			runs[px.name] = run
			names = append(names, px.name)
		}
		l.rounds = append(l.rounds, runs)
		l.order = append(l.order, names)
	}
	l.conns = conns
	return l, nil
}

// median of one proxy's rounds, by field.
func (l load) median(name string, field func(wrkRun) float64) float64 {
	return median(l.values(name, field))
}

// spread is min, median and max of one proxy's rounds, by field.
func (l load) spread(name string, field func(wrkRun) float64) (lo, mid, hi float64) {
	v := l.values(name, field)
	if len(v) == 0 {
		return 0, 0, 0
	}
	return slices.Min(v), median(v), slices.Max(v)
}

// ratios is, round by round, name's field over ref's, for the rounds
// where ref's is not zero.
func (l load) ratios(name, ref string, field func(wrkRun) float64) []float64 {
	var v []float64
	for _, r := range l.rounds {
		if d := field(r[ref]); d != 0 {
			v = append(v, field(r[name])/d)
		}
	}
	return v
}

func (l load) values(name string, field func(wrkRun) float64) []float64 {
	var v []float64
	for _, r := range l.rounds {
		v = append(v, field(r[name]))
	}
	return v
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func wrkArgs(o options, d time.Duration) []string {
	return []string{"-t" + strconv.Itoa(o.threads), "-c" + strconv.Itoa(o.conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
}

// runWrk runs wrk against the proxy for d, asking for host (h2load, when
// the proxy is measured over HTTP/2).
func runWrk(ctx context.Context, o options, px proxy, host string, d time.Duration, extra ...string) (wrkRun, error) {
	if px.h2 {
		return runH2load(ctx, o, px, host, d)
	}
	args := append(append(wrkArgs(o, d), extra...), "-H", "Host: "+host, px.url())
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cpus.pin(cmd, loadSide)
	return measure(ctx, px, cmd, func(out string) (wrkRun, error) {
		rep, err := wrk.Parse(out)
		return wrkRun{rps: rep.RPS, p50: rep.P50, p99: rep.P99, requests: rep.Requests, problems: rep.Problems}, err
	})
}

// runH2load runs h2load against the proxy for d over HTTP/2, one stream
// at a time per connection (as wrk's HTTP/1.1 keep-alive), asking for
// host. h2load gives no percentiles: p50 is its mean, p99 left zero.
func runH2load(ctx context.Context, o options, px proxy, host string, d time.Duration) (wrkRun, error) {
	args := []string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns), "-m", "1", "-D", strconv.Itoa(int(d.Seconds())),
		"-H", ":authority: " + host, px.url()}
	cmd := exec.CommandContext(ctx, "h2load", args...)
	cpus.pin(cmd, loadSide)
	return measure(ctx, px, cmd, func(out string) (wrkRun, error) {
		rep, err := parseH2load(out)
		if err == nil && rep.cipher != "" && px.cipher != nil {
			*px.cipher = rep.cipher
		}
		return wrkRun{rps: rep.rps, p50: rep.mean, requests: rep.requests, problems: rep.problems}, err
	})
}

// measure runs the load generator cmd and counts, over its run, the CPU
// and context switches of the proxy, of its backend and of the generator
// itself per request, and the machine's idle share; parse reads cmd's
// report.
func measure(ctx context.Context, px proxy, cmd *exec.Cmd, parse func(string) (wrkRun, error)) (wrkRun, error) {
	var cpu, backendCPU time.Duration
	var switches, backendSwitches int64
	if px.p != nil {
		cpu, switches = px.p.cpu(), px.p.switches()
	}
	if px.backend != nil {
		backendCPU, backendSwitches = px.backend.cpu(), px.backend.switches()
	}
	idle0, total0 := machineCPU()
	ipis0 := wakeIPIs()
	out, err := cmd.CombinedOutput()
	ipis1 := wakeIPIs()
	idle1, total1 := machineCPU()
	if px.p != nil {
		cpu, switches = px.p.cpu()-cpu, px.p.switches()-switches
	}
	if px.backend != nil {
		backendCPU, backendSwitches = px.backend.cpu()-backendCPU, px.backend.switches()-backendSwitches
	}
	tool := filepath.Base(cmd.Path)
	if ctx.Err() != nil {
		return wrkRun{}, fmt.Errorf("%s %s: %w", tool, px.name, ctx.Err())
	}
	if err != nil {
		return wrkRun{}, fmt.Errorf("%s %s (%s): %v\n%s", tool, px.name, strings.Join(cmd.Args[1:], " "), err, out)
	}
	if px.p != nil {
		if err := px.p.alive(); err != nil {
			return wrkRun{}, err
		}
	}
	run, err := parse(string(out))
	if err != nil {
		return wrkRun{}, fmt.Errorf("%s %s: %w\n%s", tool, px.name, err, out)
	}
	if run.requests > 0 {
		run.cpuPerReq = cpu / time.Duration(run.requests)
		run.switchesPerReq = float64(switches) / float64(run.requests)
		run.backendCPUPerReq = backendCPU / time.Duration(run.requests)
		run.backendSwitchesPerReq = float64(backendSwitches) / float64(run.requests)
		run.ipisPerReq = float64(ipis1-ipis0) / float64(run.requests)
		if st := cmd.ProcessState; st != nil {
			run.wrkCPUPerReq = (st.UserTime() + st.SystemTime()) / time.Duration(run.requests)
		}
	}
	if total1 > total0 {
		run.idle = float64(idle1-idle0) / float64(total1-total0)
	}
	return run, nil
}

// profileAll takes, for each proxy serving pprof, a CPU profile while wrk
// saturates it (DIR/<name>.pprof, and go tool pprof -top of it), then
// perf's kernel/user split and symbols for the edge's fast path.
func profileAll(ctx context.Context, o options, proxies []proxy, host string, halfConns int) (map[string]string, error) {
	if err := os.MkdirAll(o.profile, 0o755); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, px := range proxies {
		if px.pprof == "" {
			continue
		}
		top, err := pprofUnderLoad(ctx, o, px, host, "")
		if err != nil {
			return nil, fmt.Errorf("pprof %s: %w", px.name, err)
		}
		out["pprof "+px.name] = top
	}
	// And at half load, where the CPU per request is further from nginx's.
	if halfConns > 0 {
		script, err := os.CreateTemp("", "zw-bench-edge-*.lua")
		if err != nil {
			return nil, err
		}
		defer os.Remove(script.Name())
		fmt.Fprintf(script, "function delay() return %d end\n", halfDelay.Milliseconds())
		script.Close()
		half := o
		half.conns = halfConns
		for _, px := range proxies {
			if px.pprof == "" {
				continue
			}
			top, err := pprofUnderLoad(ctx, half, px, host, "-half", "-s", script.Name())
			if err != nil {
				return nil, fmt.Errorf("pprof %s at half load: %w", px.name, err)
			}
			out["pprof-half "+px.name] = top
		}
		// And how the threads were scheduled: the loop against nginx.
		for _, px := range proxies {
			if px.name != edgeLoop && px.name != "nginx" {
				continue
			}
			tab, err := schedUnderLoad(ctx, half, px, host, "-half", "-s", script.Name())
			if err != nil {
				return nil, fmt.Errorf("scheduling of %s at half load: %w", px.name, err)
			}
			out["sched-half "+px.name] = tab
			// And saturated, where idle CPUs are requests not served.
			if tab, err = schedUnderLoad(ctx, o, px, host, ""); err != nil {
				return nil, fmt.Errorf("scheduling of %s saturated: %w", px.name, err)
			}
			out["sched "+px.name] = tab
		}
	}
	for _, px := range proxies {
		if px.name == edgeFast || px.name == edgeLoop {
			rep, err := perfUnderLoad(ctx, o, px, host)
			if err != nil {
				return nil, err
			}
			out["perf "+px.name] = rep
		}
	}
	return out, nil
}

// fileName is a proxy's name as a file name:
// "edge (fast, GOMAXPROCS=1)" → "edge-fast-gomaxprocs-1".
func fileName(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
		} else {
			dash = true
		}
	}
	return b.String()
}

func pprofUnderLoad(ctx context.Context, o options, px proxy, host, suffix string, wrkArgs ...string) (string, error) {
	path := filepath.Join(o.profile, fileName(px.name)+suffix+".pprof")
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", px.pprof, int(o.duration.Seconds()))
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", url, resp.Status)
			}
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}()
	}()
	if _, err := runWrk(ctx, o, px, host, o.duration, wrkArgs...); err != nil {
		return "", err
	}
	if err := <-done; err != nil {
		return "", err
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", path).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -top %s: %w", path, err)
	}
	os.WriteFile(strings.TrimSuffix(path, ".pprof")+"-top.txt", top, 0o644) //nolint:errcheck
	return string(top), nil
}

// perfUnderLoad records px's CPU profile with perf while wrk saturates it,
// and returns perf's report of where the time went: kernel against user
// space, then by symbol.
func perfUnderLoad(ctx context.Context, o options, px proxy, host string) (string, error) {
	data := filepath.Join(o.profile, fileName(px.name)+".perf.data")
	rec := exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-o", data, "-p", strconv.Itoa(px.p.pid()), "--", "sleep", strconv.Itoa(int(o.duration.Seconds())))
	rec.Stdout, rec.Stderr = os.Stderr, os.Stderr
	if err := rec.Start(); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	if _, err := runWrk(ctx, o, px, host, o.duration); err != nil {
		return "", err
	}
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	// Kernel against user space first, then the symbols.
	var report []byte
	for _, sort := range []string{"dso", "symbol"} {
		out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--no-children", "--sort", sort, "--stdio", "--percent-limit", "1", "-g", "none").Output()
		if err != nil {
			return "", fmt.Errorf("perf report: %w", err)
		}
		report = append(report, out...)
	}
	os.WriteFile(filepath.Join(o.profile, fileName(px.name)+"-perf.txt"), report, 0o644) //nolint:errcheck
	return string(report), nil
}
