// Command zeitwork-logwriter is the instance log writer (package
// logwriter) alone: what each instance's shim starts for its output. The
// zeitwork binary is a log writer too; this one starts in a sixth of its
// CPU time, which fifty instances starting at once on a node pay fifty
// times. The node agent uses it when it lies next to its own executable.
package main

import (
	"fmt"
	"os"

	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

func main() {
	// The writer runs in its package's init when started as one.
	fmt.Fprintf(os.Stderr, "usage: %s %s <max bytes>:<log path> (started by a containerd shim)\n", os.Args[0], logwriter.Arg)
	os.Exit(2)
}
