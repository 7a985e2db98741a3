package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// In production the edge runs on machines of its own, or beside
// node-proxies, never on the cores of the apps it serves. -proxy-cpus and
// -load-cpus give the proxy under test CPUs of its own and leave the rest
// to wrk and the app, so that the bench can also measure a proxy that
// does not wait for the app's CPU (and the app that does not wait for
// the proxy's).

// side is which CPUs a process of the bench runs on.
type side int

const (
	proxySide side = iota // the proxies under test
	loadSide              // wrk (or h2load) and the app
)

// placement is where each side runs: taskset CPU lists, both empty when
// nothing is pinned.
type placement struct {
	proxy, load   string
	nProxy, nLoad int
}

// cpus is the placement main set from the flags before anything started.
var cpus placement

// parsePlacement checks the two lists (both or neither; CPUs of this
// machine, none in both).
func parsePlacement(proxy, load string, ncpu int) (placement, error) {
	if proxy == "" && load == "" {
		return placement{}, nil
	}
	if proxy == "" || load == "" {
		return placement{}, fmt.Errorf("-proxy-cpus and -load-cpus go together (got %q and %q)", proxy, load)
	}
	ps, err := parseCPUList(proxy, ncpu)
	if err != nil {
		return placement{}, fmt.Errorf("-proxy-cpus: %w", err)
	}
	ls, err := parseCPUList(load, ncpu)
	if err != nil {
		return placement{}, fmt.Errorf("-load-cpus: %w", err)
	}
	for c := range ps {
		if ls[c] {
			return placement{}, fmt.Errorf("CPU %d is in both -proxy-cpus and -load-cpus", c)
		}
	}
	return placement{proxy: proxy, load: load, nProxy: len(ps), nLoad: len(ls)}, nil
}

// parseCPUList reads a list as taskset -c takes it: "1", "0-2", "0,3".
func parseCPUList(s string, ncpu int) (map[int]bool, error) {
	set := map[int]bool{}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a {
			return nil, fmt.Errorf("%q is not a CPU list like 1, 0-2 or 0,3", s)
		}
		if b >= ncpu {
			return nil, fmt.Errorf("CPU %d: this machine has CPUs 0 to %d", b, ncpu-1)
		}
		for c := a; c <= b; c++ {
			set[c] = true
		}
	}
	return set, nil
}

func (pl placement) pinned() bool { return pl.proxy != "" }

// pin makes cmd run on its side's CPUs. taskset sets the affinity and
// executes the program in its place, so the pid is the program's and
// every thread and child it makes inherits the affinity: Go sizes
// GOMAXPROCS (the edge's event loops) by it.
func (pl placement) pin(cmd *exec.Cmd, s side) {
	if !pl.pinned() {
		return
	}
	list := pl.proxy
	if s == loadSide {
		list = pl.load
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		cmd.Err = fmt.Errorf("pinning %s to CPUs %s: %w", cmd.Path, list, err)
		return
	}
	cmd.Args = append([]string{"taskset", "-c", list, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = taskset
}

// workers is nginx's worker_processes on side s: one per CPU it may use
// (nginx's auto counts the machine's CPUs, not its own).
func (pl placement) workers(s side) string {
	switch {
	case !pl.pinned():
		return "auto"
	case s == loadSide:
		return strconv.Itoa(pl.nLoad)
	default:
		return strconv.Itoa(pl.nProxy)
	}
}
