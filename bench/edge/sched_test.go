package main

import (
	"testing"
	"time"
)

// What perf 6.1's sched timehist printed here (a few rows).
const timehistOut = `           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
   21145.172505 [0000]  perf[6391]                          0.000      0.000      0.000 
   21145.172708 [0000]  <idle>                              0.000      0.000      0.174 
   21145.172867 [0001]  zw-edge-bench[7001/6990]            1.250      0.057      0.158 
   21145.172901 [0000]  zw-edge-bench-b[7100/7095]          0.300      1.500      0.020 
   21145.172950 [0001]  kworker/u8:4-ev[27745]              0.010      0.004      0.012 
`

func TestParseTimehist(t *testing.T) {
	evs := parseTimehist([]byte(timehistOut))
	want := []schedEvent{
		{seconds(21145.172505), 0, "perf", 0, 0},
		{seconds(21145.172708), 0, "", 0, 174 * time.Microsecond},
		{seconds(21145.172867), 1, "zw-edge-bench", 57 * time.Microsecond, 158 * time.Microsecond},
		{seconds(21145.172901), 0, "zw-edge-bench-b", 1500 * time.Microsecond, 20 * time.Microsecond},
		{seconds(21145.172950), 1, "kworker/u8:4-ev", 4 * time.Microsecond, 12 * time.Microsecond},
	}
	if len(evs) != len(want) {
		t.Fatalf("parsed %d rows, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		e := evs[i]
		if e.at.Round(time.Microsecond) != w.at.Round(time.Microsecond) || e.cpu != w.cpu || e.comm != w.comm ||
			e.schDelay.Round(time.Microsecond) != w.schDelay || e.run.Round(time.Microsecond) != w.run {
			t.Errorf("row %d = %+v, want %+v", i, e, w)
		}
	}
}

// Idle time counts as lost to placement only while a thread waited to run
// on another CPU, and only for as long as both lasted.
func TestIdleOfFindsIdleWhileAnotherCPUHadAThreadWaiting(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	evs := []schedEvent{
		// CPU 0 idles from 1 to 3 ms and from 5 to 6 ms.
		{at: ms(3), cpu: 0, run: ms(2)},
		{at: ms(6), cpu: 0, run: ms(1)},
		// On CPU 1, proxy waited from 2 to 4 ms (ran 4–5), wrk from 2.5
		// to 5 ms (ran 5–6): together 2–5 ms, of which 2–3 ms CPU 0 idled.
		{at: ms(5), cpu: 1, comm: "proxy", schDelay: ms(2), run: ms(1)},
		{at: ms(6), cpu: 1, comm: "wrk", schDelay: ms(2.5), run: ms(1)},
		// A thread waiting on CPU 0 itself is not another CPU's.
		{at: ms(5.5), cpu: 0, comm: "backend", schDelay: ms(0.5), run: ms(0.5)},
		// CPU 1 idles from 0 to 1 ms, when nothing waits anywhere.
		{at: ms(1), cpu: 1, run: ms(1)},
	}
	m := idleOf(evs)
	check := func(what string, got, want time.Duration) {
		t.Helper()
		if got.Round(time.Microsecond) != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("idle", m.idle, ms(4))
	check("span", m.span, ms(6))
	if m.cpus != 2 || m.periods != 3 {
		t.Errorf("cpus %d, idle periods %d; want 2 and 3", m.cpus, m.periods)
	}
	check("idle while any thread waited elsewhere", m.idleWhileWaiting[""], ms(1))
	check("... while proxy waited", m.idleWhileWaiting["proxy"], ms(1))
	check("... while wrk waited", m.idleWhileWaiting["wrk"], ms(0.5))
	check("... while backend waited", m.idleWhileWaiting["backend"], 0)
}
