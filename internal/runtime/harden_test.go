package runtime_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// userNSHere reports whether this kernel lets the Runtime use user
// namespaces (the same test it makes: UserNS auto).
func userNSHere() bool {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	return err == nil && strings.TrimSpace(string(b)) != "0"
}

// statusField is one "Name:\tvalue" line of a /proc/<pid>/status text.
func statusField(status, name string) string {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestInstanceIsHardened checks, from inside a running instance, what the
// OCI spec is meant to have taken away: seccomp filters syscalls
// (keyctl, unshare, any call through the 32-bit ABI), mount is refused, the capabilities are the minimal
// set, no new privileges, /tmp is a bounded tmpfs, and root in the instance
// is an unprivileged uid on the node.
func TestInstanceIsHardened(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)

	// containerd's default profile refuses keyctl to everyone.
	if got := mustGet(t, url(s, "/keyctl")); got != "operation not permitted" {
		t.Errorf("keyctl inside the instance: %q, want EPERM from seccomp", got)
	}
	// A new user namespace would give the process every capability over
	// it: seccomp refuses unshare without CAP_SYS_ADMIN.
	if got := mustGet(t, url(s, "/run?arg=/bin/busybox&arg=unshare&arg=-U&arg=/bin/busybox&arg=true")); strings.HasPrefix(got, "exit 0") {
		t.Errorf("unshare -U inside the instance succeeded:\n%s", got)
	}
	if got := mustGet(t, url(s, "/run?arg=/bin/busybox&arg=mount&arg=-t&arg=tmpfs&arg=none&arg=/tmp")); strings.HasPrefix(got, "exit 0") {
		t.Errorf("mount inside the instance succeeded:\n%s", got)
	}

	status := mustGet(t, url(s, "/file?path=/proc/self/status"))
	// CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7.
	const want = "00000000000000fb"
	for _, f := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if got := statusField(status, f); got != want {
			t.Errorf("%s = %s, want %s (%v)", f, got, want, runtime.Capabilities)
		}
	}
	if got := statusField(status, "CapAmb"); got != "0000000000000000" {
		t.Errorf("CapAmb = %s, want none", got)
	}
	if got := statusField(status, "NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", got)
	}
	if got := statusField(status, "Seccomp"); got != "2" {
		t.Errorf("Seccomp = %q, want 2 (filter)", got)
	}
	// Only the node's own system call ABI: getpid through the 32-bit one
	// (int $0x80) kills the calling thread rather than answer.
	if goruntime.GOARCH == "amd64" {
		if got := mustGet(t, url(s, "/i386")); !strings.HasPrefix(got, "no answer") {
			t.Errorf("getpid through the i386 ABI inside the instance: %q, want no answer (the thread killed)", got)
		}
	}
	// The image's user (root here) is kept inside.
	if got := statusField(status, "Uid"); !strings.HasPrefix(got, "0\t") {
		t.Errorf("Uid inside = %q, want the image's root", got)
	}

	mounts := mustGet(t, url(s, "/file?path=/proc/self/mounts"))
	if !regexp.MustCompile(`(?m)^tmpfs /tmp tmpfs \S*size=65536k`).MatchString(mounts) {
		t.Errorf("/tmp is not a 64 MiB tmpfs:\n%s", mounts)
	}

	spec, err := containerSpec(e, s)
	if err != nil {
		t.Fatal(err)
	}
	if p := spec.Linux.Resources.Pids; p == nil || p.Limit == nil || *p.Limit != 512 {
		t.Errorf("pids limit = %+v, want 512", p)
	}

	if !userNSHere() {
		t.Log("no user namespaces in this kernel: root in the instance stays root on the node")
		return
	}
	if got := strings.Fields(mustGet(t, url(s, "/file?path=/proc/self/uid_map"))); strings.Join(got, " ") != "0 1073741824 65536" {
		t.Errorf("uid_map = %v, want root mapped to 1073741824", got)
	}
	// Seen from the node, the instance's root is an unprivileged uid.
	st, err := r.Status(context.Background(), s.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
	if err != nil {
		t.Fatal(err)
	}
	if got := statusField(string(host), "Uid"); !strings.HasPrefix(got, "1073741824\t") {
		t.Errorf("the instance's root is uid %q on the node, want 1073741824", got)
	}
	// The image's files were remapped with it: root inside owns them.
	if got := mustGet(t, url(s, "/run?arg=/bin/busybox&arg=stat&arg=-c&arg=%25u&arg=/server")); got != "exit 0\n0\n" {
		t.Errorf("owner of /server inside: %q, want root (0)", got)
	}
}

// TestForkBombLeavesNeighbourHealthy: an instance that starts processes
// without end hits its own pids limit; its neighbour keeps serving and can
// still start processes of its own. The bomb is a shell (no threads to
// lose at the limit) and bounded (1000), so that, should the limit be
// missing, it cannot take the machine down.
func TestForkBombLeavesNeighbourHealthy(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t, func(c *runtime.Config) { c.PidsLimit = 64 })
	bomb, neighbour := e.spec(t, map[string]string{"FORK_BOMB": "1"}), e.spec(t, map[string]string{"GREETING": "still here"})
	bomb.MemoryMB, neighbour.MemoryMB = 256, 256
	pullCreateStart(t, r, neighbour)
	mustGet(t, url(neighbour, "/"))
	pullCreateStart(t, r, bomb)
	// Refused by the pids limit: the shell says so and gives up.
	logs := waitLogs(t, r, bomb, "can't fork: Resource temporarily unavailable")
	if strings.Contains(logs, "bomb done") {
		t.Fatalf("the bomb started all its 1000 processes:\n%s", logs)
	}
	waitFor(t, r, bomb.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })

	if body := mustGet(t, url(neighbour, "/")); body != "still here" {
		t.Fatalf("neighbour answers %q", body)
	}
	if got := mustGet(t, url(neighbour, "/bomb?n=5")); got != "started 5" {
		t.Fatalf("the neighbour cannot start processes of its own: %q", got)
	}
}

// TestWritableLayerIsBounded: overlayfs here has no quota, so an instance
// that fills its own filesystem past DiskLimitMB is killed and marked
// (DiskKilled), while a neighbour writing within the bound keeps running.
func TestWritableLayerIsBounded(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t, func(c *runtime.Config) {
		c.DiskLimitMB = 8
		c.LogCheckInterval = 200 * time.Millisecond
	})
	filler, neighbour := e.spec(t, nil), e.spec(t, map[string]string{"GREETING": "still here"})
	pullCreateStart(t, r, neighbour)
	pullCreateStart(t, r, filler)
	fill := func(s runtime.Spec, mb int) string {
		return url(s, fmt.Sprintf("/run?arg=/bin/busybox&arg=dd&arg=if=/dev/zero&arg=of=/fill&arg=bs=1048576&arg=count=%d", mb))
	}
	if out := mustGet(t, fill(neighbour, 2)); !strings.Contains(out, "exit 0") {
		t.Fatalf("writing 2 MiB: %s", out)
	}
	// Asked once it answers, and only once: the kill may come before the
	// reply, and a second ask would find nobody there.
	mustGet(t, url(filler, "/"))
	_, _ = get(ctxFor(t, 30*time.Second), fill(filler, 32))
	st := waitFor(t, r, filler.InstanceID, 30*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })
	if !st.DiskKilled || st.OOMKilled {
		t.Fatalf("an instance that wrote 32 MiB past an 8 MiB bound: %+v", st)
	}
	// Give the check a few more rounds: the neighbour within its bound is
	// left alone.
	time.Sleep(time.Second)
	if st, err := r.Status(context.Background(), neighbour.InstanceID); err != nil || st.State != runtime.StateRunning || st.DiskKilled {
		t.Fatalf("the neighbour: %+v, %v", st, err)
	}
	if body := mustGet(t, url(neighbour, "/")); body != "still here" {
		t.Fatalf("neighbour answers %q", body)
	}
}

// TestKillBetweenTheReadsOfAStatusIsExplained: the disk bound marks an
// instance, then kills it. A Status that read the marks just before the
// mark and the task just after the kill must still say why it exited.
func TestKillBetweenTheReadsOfAStatusIsExplained(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)

	ctx := namespaces.WithNamespace(context.Background(), e.ns)
	ctr, err := e.raw.LoadContainer(ctx, s.InstanceID.String())
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	runtime.SetAfterMarksRead(func() {
		once.Do(func() {
			// What enforceDiskLimit does: the mark, then the kill.
			if _, err := ctr.SetLabels(ctx, map[string]string{"dev.zeitwork.disk": time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
				t.Error(err)
			}
			if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
				t.Error(err)
			}
			<-exited
		})
	})
	t.Cleanup(func() { runtime.SetAfterMarksRead(nil) })

	st, err := r.Status(ctx, s.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != runtime.StateExited || st.ExitCode != 137 || !st.DiskKilled {
		t.Fatalf("killed for its disk bound between the reads: %+v", st)
	}
}
