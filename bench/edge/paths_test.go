package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestPathsAreTheEdgesOwnOnceEach(t *testing.T) {
	for _, c := range []struct{ in, err string }{
		{"loop,h3", `"h3" is not a data path`},
		{"", `"" is not a data path`},
		{"loop, loop", "loop given twice"},
	} {
		if _, err := parsePaths(c.in); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("-paths %q: %v, want an error saying %q", c.in, err, c.err)
		}
	}
	got, err := parsePaths(" loop ,stdlib")
	if err != nil || !slices.Equal(got, []string{"loop", "stdlib"}) {
		t.Fatalf("-paths \" loop ,stdlib\": %v, %v; want [loop stdlib] in that order", got, err)
	}
}

// The round-by-round ratios pair each proxy's run with the reference's of
// the same round, not medians with medians.
func TestRoundsCompareRunsOfTheSameRound(t *testing.T) {
	var l load
	// The loop ahead of nginx in each round, though its median rate is
	// below nginx's: a fast hour and a slow one.
	for _, rates := range [][2]float64{{110, 100}, {55, 50}, {66, 60}} {
		l.rounds = append(l.rounds, map[string]wrkRun{
			edgeLoop: {rps: rates[0], cpuPerReq: 9}, "nginx": {rps: rates[1], cpuPerReq: 10},
		})
		l.order = append(l.order, []string{edgeLoop, "nginx"})
	}
	if r := l.ratios(edgeLoop, "nginx", func(w wrkRun) float64 { return w.rps }); !slices.Equal(r, []float64{1.1, 1.1, 1.1}) {
		t.Fatalf("ratios %v, want 1.1 in each round", r)
	}
	var out bytes.Buffer
	rounds(func(f string, a ...any) { fmt.Fprintf(&out, f, a...) }, l, []string{edgeLoop, "nginx"}, "nginx", "wrk")
	want := "- edge (loop): requests/s 1.10–1.10–1.10×, at or above in 3 of 3 rounds; CPU per request 0.90–0.90–0.90×"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("report:\n%s\nwant the line %q", out.String(), want)
	}
}

// Wake-ups are counted from the RES and CAL lines of every CPU, and from
// nothing else in /proc/interrupts.
func TestWakeIPIsSumResAndCalOverCPUs(t *testing.T) {
	const interrupts = `           CPU0       CPU1
  0:         33          0   IO-APIC   2-edge      timer
LOC:  103785030  101541529   Local timer interrupts
RES:         31         24   Rescheduling interrupts
CAL:          2          3   Function call interrupts
TLB:        500        600   TLB shootdowns
`
	if got := parseWakeIPIs(interrupts); got != 60 {
		t.Fatalf("wake-up interrupts %d, want 31+24+2+3 = 60", got)
	}
	if wakeIPIs() <= 0 {
		t.Fatal("this machine's /proc/interrupts shows no RES or CAL interrupts")
	}
}
