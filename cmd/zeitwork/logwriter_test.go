package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// Every instance's shim starts this binary as its log writer, so what the
// binary does before the writer runs is paid once per instance, in CPU and
// in memory that stays for the instance's life. The writer runs in its
// package's init, which must come before the bulk of the binary's packages
// initialize: before it had a package of its own, 3.4 MB were allocated by
// some 400 inits first (35 ms, 6.4 MiB of private memory per writer); now
// about 0.4 MB by those of the standard library and small ones.
//
// This test binary links every package the zeitwork binary does, so it is
// its own stand-in: started as a writer with a bad argument, the writer
// says so and exits, and the Go runtime's init trace says what ran before.
func TestTheLogWriterStartsBeforeTheBinarysPackagesInitialize(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, logwriter.Arg, "not-a-spec")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if !strings.Contains(stderr.String(), `argument "not-a-spec" is not <max bytes>:<absolute path>`) {
		t.Fatalf("the writer did not run (%v):\n%s", err, stderr.String())
	}
	var inits, allocated int
	var zeitwork []string
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init <package> @<t> ms, <t> ms clock, <n> bytes, <n> allocs
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] != "init" {
			continue
		}
		inits++
		n, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("init trace line %q: %v", sc.Text(), err)
		}
		allocated += n
		if strings.HasPrefix(f[1], "github.com/zeitwork/zeitwork/") {
			zeitwork = append(zeitwork, f[1])
		}
	}
	t.Logf("%d packages initialized before the writer ran, allocating %d bytes", inits, allocated)
	if inits == 0 {
		t.Fatalf("no init trace (GODEBUG=inittrace=1):\n%s", stderr.String())
	}
	if allocated > 1<<20 {
		t.Errorf("the packages initialized before the log writer allocated %d bytes (want under 1 MiB): a heavy package now comes first, or the writer moved", allocated)
	}
	if len(zeitwork) > 0 {
		t.Errorf("zeitwork's own packages initialized before the log writer: %v", zeitwork)
	}
}
