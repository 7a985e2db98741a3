package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestPlacementRefusesWhatTasksetWouldNot(t *testing.T) {
	for _, c := range []struct{ proxy, load, err string }{
		{"1", "", "go together"},
		{"", "0", "go together"},
		{"x", "0", "not a CPU list"},
		{"1-0", "0", "not a CPU list"},
		{"1", "0,-1", "not a CPU list"},
		{"4", "0", "CPUs 0 to 3"},
		{"0-2", "2,3", "CPU 2 is in both"},
	} {
		if _, err := parsePlacement(c.proxy, c.load, 4); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("-proxy-cpus %q -load-cpus %q: %v, want an error saying %q", c.proxy, c.load, err, c.err)
		}
	}
	pl, err := parsePlacement("1,3", "0,2", 4)
	if err != nil {
		t.Fatal(err)
	}
	if pl.workers(proxySide) != "2" || pl.workers(loadSide) != "2" {
		t.Fatalf("nginx workers: proxy %s, load %s; want 2 and 2", pl.workers(proxySide), pl.workers(loadSide))
	}
	if none, _ := parsePlacement("", "", 4); none.pinned() || none.workers(proxySide) != "auto" {
		t.Fatal("no lists should pin nothing")
	}
}

// A pinned program runs on its side's CPUs only, under its own pid.
func TestPinnedProgramsRunOnTheirCPUs(t *testing.T) {
	// Both sides on CPU 0, which every machine has (parsePlacement would
	// refuse the overlap).
	pl := placement{proxy: "0", load: "0", nProxy: 1, nLoad: 1}
	for _, s := range []side{proxySide, loadSide} {
		cmd := exec.Command("grep", "-E", "^(Cpus_allowed_list|Name):", "/proc/self/status")
		pl.pin(cmd, s)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(out); got != "Name:\tgrep\nCpus_allowed_list:\t0\n" {
			t.Fatalf("side %d: %q; want grep itself, on CPU 0 only", s, got)
		}
	}
	unpinned := exec.Command("true")
	placement{}.pin(unpinned, proxySide)
	if len(unpinned.Args) != 1 {
		t.Fatalf("unpinned: %q", unpinned.Args)
	}
}
