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
		{"perf", 0},
		{"zw-edge-bench", 57 * time.Microsecond},
		{"zw-edge-bench-b", 1500 * time.Microsecond},
		{"kworker/u8:4-ev", 4 * time.Microsecond},
	}
	// <idle> has no [tid]: not a thread.
	if len(evs) != len(want) {
		t.Fatalf("parsed %d rows, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		if evs[i].comm != w.comm || evs[i].schDelay.Round(time.Microsecond) != w.schDelay {
			t.Errorf("row %d = %+v, want %+v", i, evs[i], w)
		}
	}
}
