package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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
}

// load is the throughput comparison: per round, each proxy's run and the
// order they ran in.
type load struct {
	rounds []map[string]wrkRun
	order  [][]string
}

// compare warms both proxies up, then runs wrk against each in turn, the
// first one alternating between rounds so neither always runs on a
// machine the other just heated.
func compare(ctx context.Context, o options, proxies []proxy, host string) (load, error) {
	for _, px := range proxies {
		if _, err := runWrk(ctx, o, px, host, o.warmup); err != nil {
			return load{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var l load
	for r := range o.rounds {
		order := slices.Clone(proxies)
		if r%2 == 1 {
			slices.Reverse(order)
		}
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

// median of one proxy's rounds, by field.
func (l load) median(name string, field func(wrkRun) float64) float64 {
	var v []float64
	for _, r := range l.rounds {
		v = append(v, field(r[name]))
	}
	return median(v)
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

// runWrk runs wrk against the proxy for d, asking for host.
func runWrk(ctx context.Context, o options, px proxy, host string, d time.Duration) (wrkRun, error) {
	args := append(wrkArgs(o, d), "-H", "Host: "+host, "http://"+px.addr+"/")
	cpu := px.p.cpu()
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	cpu = px.p.cpu() - cpu
	if ctx.Err() != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w", px.name, ctx.Err())
	}
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s (%s): %v\n%s", px.name, strings.Join(args, " "), err, out)
	}
	if err := px.p.alive(); err != nil {
		return wrkRun{}, err
	}
	rep, err := wrk.Parse(string(out))
	run := wrkRun{rps: rep.RPS, p50: rep.P50, p99: rep.P99, requests: rep.Requests, problems: rep.Problems}
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w\n%s", px.name, err, out)
	}
	if run.requests > 0 {
		run.cpuPerReq = cpu / time.Duration(run.requests)
	}
	return run, nil
}
