package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// schedUnderLoad records every scheduling event on the machine (perf
// sched) while wrk drives px at the half-load rate, and says, for the
// proxy, the backend and wrk, how often their threads ran per request and
// how long a woken thread waited for a CPU (perf's "sch delay"). At half
// load nobody is short of CPU on average, so a proxy whose requests take
// longer than nginx's either wakes more often or waits longer to run.
func schedUnderLoad(ctx context.Context, o options, px proxy, host string, wrkArgs ...string) (string, error) {
	data := filepath.Join(o.profile, fileName(px.name)+"-half.sched.data")
	rec := exec.CommandContext(ctx, "perf", "sched", "record", "-a", "-o", data, "--", "sleep", strconv.Itoa(int(o.duration.Seconds())))
	rec.Stdout, rec.Stderr = os.Stderr, os.Stderr
	if err := rec.Start(); err != nil {
		return "", fmt.Errorf("perf sched record: %w", err)
	}
	run, err := runWrk(ctx, o, px, host, o.duration, wrkArgs...)
	if err != nil {
		return "", err
	}
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("perf sched record: %w", err)
	}
	out, err := exec.CommandContext(ctx, "perf", "sched", "timehist", "-i", data).Output()
	if err != nil {
		return "", fmt.Errorf("perf sched timehist: %w", err)
	}
	groups := []struct{ what, comm string }{
		{"proxy", comm(px.p.pid())},
		{"backend", comm(px.backend.pid())},
		{"wrk", "wrk"},
	}
	delays := map[string][]time.Duration{}
	for _, ev := range parseTimehist(out) {
		delays[ev.comm] = append(delays[ev.comm], ev.schDelay)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| %s, %d requests | threads ran, per request | waited for a CPU after a wake-up: mean / p50 / p99 / max | runs that waited over 1 ms |\n|---|---:|---:|---:|\n", px.name, run.requests)
	for _, g := range groups {
		d := delays[g.comm]
		if len(d) == 0 || run.requests == 0 {
			fmt.Fprintf(&b, "| %s (%s) | — | — | — |\n", g.what, g.comm)
			continue
		}
		slices.Sort(d)
		var sum time.Duration
		over := 0
		for _, x := range d {
			sum += x
			if x > time.Millisecond {
				over++
			}
		}
		fmt.Fprintf(&b, "| %s (%s) | %.2f | %s / %s / %s / %s | %d |\n", g.what, g.comm,
			float64(len(d))/float64(run.requests), us(sum/time.Duration(len(d))),
			us(d[len(d)/2]), us(d[len(d)*99/100]), us(d[len(d)-1]), over)
	}
	os.Remove(data) //nolint:errcheck // hundreds of MB; the table is the result
	return b.String(), nil
}

// comm is a process's command name as the kernel (and perf) shows it.
func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

type schedEvent struct {
	comm     string
	schDelay time.Duration
}

// timehistLine is one of perf sched timehist's rows: a thread leaving a
// CPU, with how long it had waited off it, how long it waited to run once
// woken, and how long it ran.
var timehistLine = regexp.MustCompile(`^\s*[\d.]+\s+\[\d+\]\s+(.+?)\[\d+(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$`)

func parseTimehist(out []byte) []schedEvent {
	var evs []schedEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := timehistLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ms, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		evs = append(evs, schedEvent{comm: m[1], schDelay: time.Duration(ms * float64(time.Millisecond))})
	}
	return evs
}
