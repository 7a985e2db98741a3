package runtime_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

// cgroupValue reads one of the instance's cgroup files, v1 or v2.
func cgroupValue(t *testing.T, e *env, s runtime.Spec, v1Controller, v1File, v2File string) string {
	t.Helper()
	spec, err := containerSpec(e, s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("/sys/fs/cgroup", v1Controller, spec.Linux.CgroupsPath, v1File)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		path = filepath.Join("/sys/fs/cgroup", spec.Linux.CgroupsPath, v2File)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cpuQuota is the instance's CFS quota in µs per 100 ms period.
func cpuQuota(t *testing.T, e *env, s runtime.Spec) string {
	t.Helper()
	v := cgroupValue(t, e, s, "cpu", "cpu.cfs_quota_us", "cpu.max")
	quota, _, _ := strings.Cut(v, " ") // cgroup v2: "quota period"
	return quota
}

// waitQuota waits for the instance's CPU quota to be want.
func waitQuota(t *testing.T, e *env, s runtime.Spec, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for got := cpuQuota(t, e, s); got != want; got = cpuQuota(t, e, s) {
		if time.Now().After(deadline) {
			t.Fatalf("CPU quota %s after %v, want %s", got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartBoost: an instance starts with the boost's CPU limit, gets its
// own after the boost (and only that changes: memory, pids and its CPU
// share stay), and the limit then bites; a restart after its process
// exited is boosted again, and a boost a Runtime left when it closed is
// ended by the next one.
func TestStartBoost(t *testing.T) {
	e := newEnv(t)
	// Long enough that the quota is read before it ends, on a machine as
	// loaded as it gets.
	const boost = 3 * time.Second
	boosted := func(c *runtime.Config) { c.StartBoost, c.StartBoostCPUMillis = boost, 500 }
	r := e.runtime(t, boosted)
	s := e.spec(t, nil)
	s.CPUMillis, s.CPURequestMillis, s.MemoryMB = 100, 25, 48
	pullCreateStart(t, r, s)
	if got := cpuQuota(t, e, s); got != "50000" {
		t.Fatalf("CPU quota just after the start: %s, want the boost's 50000", got)
	}
	mustGet(t, url(s, "/"))
	waitQuota(t, e, s, "10000", boost+10*time.Second)
	if got := cgroupValue(t, e, s, "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(48<<20) {
		t.Errorf("memory limit after the boost: %s, want %d", got, 48<<20)
	}
	if got := cgroupValue(t, e, s, "pids", "pids.max", "pids.max"); got != "512" {
		t.Errorf("pids limit after the boost: %s, want 512", got)
	}
	if got := cgroupValue(t, e, s, "cpu", "cpu.shares", "cpu.weight"); got != "25" && got != "1" { // v1 shares, v2 weight
		t.Errorf("CPU share after the boost: %s", got)
	}
	body := mustGet(t, url(s, "/spin?ms=1000"))
	if used, err := strconv.Atoi(body); err != nil || used > 250_000 {
		t.Errorf("after the boost, 1 s of spinning used %s µs of CPU; a 100-millicore limit allows about 100 000", body)
	}

	// The process exits; its restart is boosted afresh, and lowered again.
	ctx := ctxFor(t, time.Minute)
	mustGet(t, url(s, "/exit"))
	waitFor(t, r, s.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })
	if err := r.Start(ctx, s.InstanceID); err != nil {
		t.Fatal(err)
	}
	if got := cpuQuota(t, e, s); got != "50000" {
		t.Fatalf("CPU quota just after a restart: %s, want the boost's 50000", got)
	}
	waitQuota(t, e, s, "10000", boost+10*time.Second)

	// A Runtime that closes before a boost is due leaves it to the next.
	s2 := e.spec(t, nil)
	s2.CPUMillis = 100
	cfg := e.config()
	cfg.StartBoost, cfg.StartBoostCPUMillis = boost, 500
	long, err := runtime.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pullCreateStart(t, long, s2)
	if err := long.Close(); err != nil {
		t.Fatal(err)
	}
	if got := cpuQuota(t, e, s2); got != "50000" {
		t.Fatalf("CPU quota of an instance started boosted: %s", got)
	}
	_ = e.runtime(t, boosted)
	waitQuota(t, e, s2, "10000", boost+10*time.Second)
}
