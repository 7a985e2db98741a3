// Package benchnode is what the node benchmarks (bench/nodeagent,
// bench/deploy-speed) share about the machine they run instances on.
package benchnode

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// FreePort is a port the kernel chose and holds for the process: the
// runtime alone's instances share the host's network, and a port only
// chosen, then freed, could be taken (an outgoing connection's source
// port) before the instance binds it.
func FreePort() int {
	port, _, err := testenv.ReservePort()
	if err != nil {
		panic(err)
	}
	return port
}

// DeleteNamespace removes a containerd namespace the bench made, with its
// images and snapshots; a failure is said, not fatal.
func DeleteNamespace(ctrd, ns string) {
	if err := testenv.DeleteContainerdNamespace(ctrd, ns); err != nil {
		fmt.Fprintf(os.Stderr, "bench: remove containerd namespace %s: %v\n", ns, err)
	}
}

// DeleteInstanceNetns removes the network namespaces of the instances of
// the simulated node whose id the agent kept in stateDir, after the bench
// stopped them behind the agent's back (their containers and the node's
// namespace go; these would stay). Left behind, every run would add fifty
// to the machine, and each new namespace's first look into /proc/sys
// walks past all of them: the agent's batch got slower with every run.
func DeleteInstanceNetns(stateDir string) {
	node, err := nodeagent.StoredID(stateDir)
	if err != nil {
		return
	}
	if err := nodeagent.RemoveSimulatedNetns(node); err != nil {
		fmt.Fprintf(os.Stderr, "bench: remove network namespaces: %v\n", err)
	}
}

// Ms is d in whole milliseconds, as the tables print it.
func Ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// CPU is the machine's busy time so far (/proc/stat: all but idle and
// iowait), in clock ticks of 10 ms. Two readings around a batch give what
// the batch cost every process on the machine, which is steadier than
// its wall time on a shared two-core machine.
func CPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, f := range strings.Fields(line)[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		busy += v
	}
	return time.Duration(busy) * 10 * time.Millisecond
}
