package simmachine

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKilledTestsMachinesAreSwept kills a test process (SIGKILL: no
// cleanup runs) that has a machine booted, and proves the next Start's
// sweep removes all of it: its processes, network namespace, bridge,
// overlay mount and directory, cgroups and state.
func TestKilledTestsMachinesAreSwept(t *testing.T) {
	if os.Getenv("SIMMACHINE_KILLED_CHILD") == "1" {
		c := Start(t, 1)
		// The parent reads this line, then we die with everything up.
		os.Stdout.WriteString(c.Prefix + " " + c.Machines[0].Name + " " + c.Machines[0].root + "\n")
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	Rootfs(t) // skip where machines cannot boot, before the child does
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledTestsMachinesAreSwept$", "-test.v")
	// The child's own temporary directories (its SSH keys) are never
	// removed by it: they go inside ours, which is.
	cmd.Env = append(os.Environ(), "SIMMACHINE_KILLED_CHILD=1", "TMPDIR="+t.TempDir())
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var prefix, name, root string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && strings.HasPrefix(f[0], "zs") {
			prefix, name, root = f[0], f[1], f[2]
		}
	}
	_ = cmd.Wait()
	if prefix == "" {
		t.Fatalf("the child booted no machine (%v)", cmd.ProcessState)
	}
	// Before the sweep: all of it is still there.
	if _, err := os.Stat(filepath.Join(StateDir, prefix, "lock")); err != nil {
		t.Fatalf("the killed test left no state: %v", err)
	}
	if !mounted(root) {
		t.Fatalf("the killed test's overlay %s is not mounted: nothing to sweep", root)
	}

	sweep(t)

	if mounted(root) {
		t.Errorf("overlay %s still mounted", root)
	}
	if _, err := os.Stat(filepath.Dir(root)); err == nil {
		t.Errorf("machine directory %s left", filepath.Dir(root))
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
		t.Errorf("network namespace %s left", name)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("links of %s left", prefix)
	}
	for _, r := range cgroupRoots() {
		if _, err := os.Stat(filepath.Join(r, "zeitwork-sim", name)); err == nil {
			t.Errorf("cgroup %s/zeitwork-sim/%s left", r, name)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/systemd/nspawn/propagate", name)); err == nil {
		t.Errorf("nspawn's propagation directory of %s left", name)
	}
	if _, err := os.Stat(filepath.Join(StateDir, prefix)); err == nil {
		t.Errorf("state of %s left", prefix)
	}
	// Its nspawn is gone (the death signal or the sweep's kill).
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", "--machine="+name).Output()
		if len(strings.TrimSpace(string(out))) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn of %s still running: %s", name, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mounted(p string) bool {
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}
