package main

import (
	"bufio"
	"bytes"
	"cmp"
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
// sched) while wrk drives px (at the half-load rate when wrkArgs pace it,
// else saturated), and says, for the proxy, the backend and wrk, how often
// their threads ran per request and how long a woken thread waited for a
// CPU (perf's "sch delay"). At half load nobody is short of CPU on average,
// so a proxy whose requests take longer than nginx's either wakes more
// often or waits longer to run. Saturated, the CPUs should never idle; the
// table's last line says how long they did, and how much of that with a
// thread waiting to run on another CPU: work the kernel did not move.
func schedUnderLoad(ctx context.Context, o options, px proxy, host, suffix string, wrkArgs ...string) (string, error) {
	data := filepath.Join(o.profile, fileName(px.name)+suffix+".sched.data")
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
	os.Remove(data) //nolint:errcheck // hundreds of MB; the table is the result
	groups := []struct{ what, comm string }{
		{"proxy", comm(px.p.pid())},
		{"backend", comm(px.backend.pid())},
		{"wrk", "wrk"},
	}
	evs := parseTimehist(out)
	delays := map[string][]time.Duration{}
	for _, ev := range evs {
		if ev.comm != "" {
			delays[ev.comm] = append(delays[ev.comm], ev.schDelay)
		}
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
	if run.requests > 0 {
		m := idleOf(evs)
		if total := m.cpus * m.span; total > 0 {
			share := func(d time.Duration) string { return fmt.Sprintf("%.1f %%", 100*float64(d)/float64(total)) }
			var whose []string
			for _, g := range groups {
				whose = append(whose, fmt.Sprintf("%s %s", g.what, share(m.idleWhileWaiting[g.comm])))
			}
			fmt.Fprintf(&b, "\nCPUs idle %s of the time, in %.3f idle periods per request; idle while a thread waited to run on another CPU %s of the time (while one of: %s).\n",
				share(m.idle), float64(m.periods)/float64(run.requests), share(m.idleWhileWaiting[""]), strings.Join(whose, ", "))
		}
	}
	return b.String(), nil
}

// comm is a process's command name as the kernel (and perf) shows it.
func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

type schedEvent struct {
	at       time.Duration // when it left the CPU
	cpu      int
	comm     string // "": the CPU was idle
	schDelay time.Duration
	run      time.Duration
}

// timehistLine is one of perf sched timehist's rows: a thread (or the
// idle task) leaving a CPU, with how long it had waited off it, how long
// it waited to run once woken, and how long it ran.
var timehistLine = regexp.MustCompile(`^\s*([\d.]+)\s+\[(\d+)\]\s+(?:<idle>|(.+?)\[\d+(?:/\d+)?\])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$`)

func parseTimehist(out []byte) []schedEvent {
	var evs []schedEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := timehistLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err1 := strconv.ParseFloat(m[1], 64)
		cpu, err2 := strconv.Atoi(m[2])
		delay, err3 := strconv.ParseFloat(m[5], 64)
		run, err4 := strconv.ParseFloat(m[6], 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		evs = append(evs, schedEvent{at: seconds(at), cpu: cpu, comm: m[3], schDelay: seconds(delay / 1e3), run: seconds(run / 1e3)})
	}
	return evs
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// span is a stretch of time.
type span struct{ from, to time.Duration }

// machineIdle is what the CPUs did not do over a recording.
type machineIdle struct {
	cpus    time.Duration // how many CPUs, as a multiplier of span
	span    time.Duration
	idle    time.Duration // summed over the CPUs
	periods int
	// CPU time idle while a thread waited to run on another CPU, by the
	// waiting thread's command ("": any thread).
	idleWhileWaiting map[string]time.Duration
}

// idleOf measures the idle periods of a recording and how much of them
// another CPU had a thread waiting to run: a thread woken onto a busy CPU
// waits there while this one idles, until the kernel moves it.
func idleOf(evs []schedEvent) machineIdle {
	m := machineIdle{idleWhileWaiting: map[string]time.Duration{}}
	if len(evs) == 0 {
		return m
	}
	idle := map[int][]span{}
	waits := map[string]map[int][]span{"": {}} // by command, then CPU
	ncpu := 0
	first, last := evs[0].at, evs[0].at
	for _, ev := range evs {
		ncpu = max(ncpu, ev.cpu+1)
		started := ev.at - ev.run
		first, last = min(first, started), max(last, ev.at)
		if ev.comm == "" {
			idle[ev.cpu] = append(idle[ev.cpu], span{started, ev.at})
			m.idle += ev.run
			m.periods++
			continue
		}
		if ev.schDelay <= 0 {
			continue
		}
		w := span{started - ev.schDelay, started}
		if waits[ev.comm] == nil {
			waits[ev.comm] = map[int][]span{}
		}
		waits[ev.comm][ev.cpu] = append(waits[ev.comm][ev.cpu], w)
		waits[""][ev.cpu] = append(waits[""][ev.cpu], w)
	}
	m.cpus, m.span = time.Duration(ncpu), last-first
	for comm, byCPU := range waits {
		for cpu, idles := range idle {
			var elsewhere []span
			for c, w := range byCPU {
				if c != cpu {
					elsewhere = append(elsewhere, w...)
				}
			}
			m.idleWhileWaiting[comm] += overlap(merged(idles), merged(elsewhere))
		}
	}
	return m
}

// merged sorts spans and joins those that touch.
func merged(s []span) []span {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b span) int { return cmp.Compare(a.from, b.from) })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && x.from <= out[n-1].to {
			out[n-1].to = max(out[n-1].to, x.to)
			continue
		}
		out = append(out, x)
	}
	return out
}

// overlap is how long two sorted, disjoint span lists cover together.
func overlap(a, b []span) time.Duration {
	var d time.Duration
	for i, j := 0, 0; i < len(a) && j < len(b); {
		if from, to := max(a[i].from, b[j].from), min(a[i].to, b[j].to); to > from {
			d += to - from
		}
		if a[i].to < b[j].to {
			i++
		} else {
			j++
		}
	}
	return d
}
