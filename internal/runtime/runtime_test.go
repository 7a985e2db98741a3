package runtime_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func TestPullCreateStartServes(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, 2*time.Minute)

	greeting := "hello from " + id.New().String()
	s := e.spec(t, map[string]string{"GREETING": greeting, "DATABASE_URL": "postgres://db/app", "PORT": "1"})

	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	st, err := r.Status(ctx, s.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != runtime.StateCreated || st.SpecHash != s.Hash() || st.Image != s.Image || st.RuntimeHandler != runtime.HandlerRunc {
		t.Fatalf("after Create: %+v (want created, hash %s, image %s, runc)", st, s.Hash(), s.Image)
	}
	if err := r.Start(ctx, s.InstanceID); err != nil {
		t.Fatal(err)
	}
	if body := mustGet(t, url(s, "/")); body != greeting {
		t.Fatalf("GET / = %q, want %q", body, greeting)
	}
	// The project's variables and PORT reach the process; PORT is the
	// platform's, whatever the project set.
	if got := mustGet(t, url(s, "/env?key=DATABASE_URL")); got != "postgres://db/app" {
		t.Errorf("DATABASE_URL = %q", got)
	}
	if got := mustGet(t, url(s, "/env?key=PORT")); got != strconv.Itoa(s.Port) {
		t.Errorf("PORT = %q, want %d", got, s.Port)
	}

	st, err = r.Status(ctx, s.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != runtime.StateRunning || st.PID == 0 || st.StartedAt.IsZero() || time.Since(st.StartedAt) > time.Minute {
		t.Fatalf("after Start: %+v", st)
	}
	// Starting a running instance is a no-op, not a second process.
	if err := r.Start(ctx, s.InstanceID); err != nil {
		t.Fatal(err)
	}
	if again, _ := r.Status(ctx, s.InstanceID); again.PID != st.PID {
		t.Fatalf("second Start changed the PID: %d → %d", st.PID, again.PID)
	}

	// Both streams land in the log.
	logs := waitLogs(t, r, s, "listening on "+strconv.Itoa(s.Port))
	if !strings.Contains(logs, "stderr is captured too") {
		t.Errorf("stderr missing from the log:\n%s", logs)
	}

	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].InstanceID != s.InstanceID || list[0].State != runtime.StateRunning {
		t.Fatalf("List = %+v", list)
	}
}

// TestStartupTimings measures what issue 3 asks: pulling a never-seen image
// from the local registry, and the warm path an instance takes on a node that
// has the image (pull check + create + start + first HTTP answer).
func TestStartupTimings(t *testing.T) {
	e := newEnv(t)
	ref, err := buildImage(e.reg, testenv.Buildkit(t), "timing")
	if err != nil {
		t.Fatal(err)
	}
	r := e.runtime(t)
	ctx := ctxFor(t, 2*time.Minute)

	start := time.Now()
	if err := r.Pull(ctx, ref, nil); err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)

	var pull, create, startT, ready []time.Duration
	for range 5 {
		s := e.spec(t, nil)
		s.Image = ref
		t0 := time.Now()
		if err := r.Pull(ctx, ref, nil); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := r.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		if err := r.Start(ctx, s.InstanceID); err != nil {
			t.Fatal(err)
		}
		t3 := time.Now()
		mustGet(t, url(s, "/"))
		t4 := time.Now()
		pull, create, startT, ready = append(pull, t1.Sub(t0)), append(create, t2.Sub(t1)), append(startT, t3.Sub(t2)), append(ready, t4.Sub(t0))
		if err := r.Stop(ctx, s.InstanceID, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cold pull (new blobs, ~8 MB image): %v", cold.Round(time.Millisecond))
	t.Logf("warm, median of 5: pull %v, create %v, start %v; pull→first HTTP 200 %v",
		median(pull), median(create), median(startT), median(ready))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

func TestAgentRestartKeepsInstancesAndLogs(t *testing.T) {
	e := newEnv(t)
	r1 := e.runtime(t)
	s := e.spec(t, map[string]string{"GREETING": "still here"})
	pullCreateStart(t, r1, s)
	mustGet(t, url(s, "/log?line=before-restart"))
	before := waitFor(t, r1, s.InstanceID, 5*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateRunning })

	// The agent goes away: Runtime and its connection closed.
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	// The instance keeps serving and logging while no agent exists.
	if body := mustGet(t, url(s, "/log?line=while-agent-down")); body != "ok" {
		t.Fatalf("instance stopped answering with the agent gone: %q", body)
	}

	r2 := e.runtime(t)
	list, err := r2.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("List after restart = %+v, want the one instance", list)
	}
	got := list[0]
	if got.InstanceID != s.InstanceID || got.State != runtime.StateRunning || got.PID != before.PID ||
		got.SpecHash != s.Hash() || !got.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("adopted %+v, want %+v (same PID, hash, start time)", got, before)
	}
	if body := mustGet(t, url(s, "/")); body != "still here" {
		t.Fatalf("GET / after restart = %q", body)
	}
	mustGet(t, url(s, "/log?line=after-restart"))
	logs := waitLogs(t, r2, s, "after-restart 1")
	for _, want := range []string{"before-restart 1", "while-agent-down 1"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// An instance given neither a network namespace nor the host's gets one of
// its own with only loopback: the safe default if the network package ever
// hands over an empty path.
func TestDefaultNetworkIsIsolated(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	s.HostNetwork = false
	pullCreateStart(t, r, s)
	waitLogs(t, r, s, "listening on")
	waitFor(t, r, s.InstanceID, 5*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateRunning })
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("instance without a network namespace is reachable from the host")
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t)
	// The limits as the Spec sets them from the start: TestStartBoost
	// has them after a boost.
	r := e.runtime(t, func(c *runtime.Config) { c.StartBoost = -1 })
	s := e.spec(t, nil)
	s.CPUMillis, s.CPURequestMillis, s.MemoryMB = 100, 25, 48
	s.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(s.ResolvConf, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))

	// The limits reached the kernel.
	spec, err := containerSpec(e, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool {
		return m.Destination == "/etc/resolv.conf" && m.Source == s.ResolvConf && slices.Contains(m.Options, "ro")
	}) {
		t.Errorf("no read-only resolv.conf mount from %s in %+v", s.ResolvConf, spec.Mounts)
	}
	cg := spec.Linux.CgroupsPath
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		checkFile(t, filepath.Join("/sys/fs/cgroup", cg, "cpu.max"), "10000 100000")
		// runc's mapping of 25m's 25 shares: 1 + (25-2)*9999/262142.
		checkFile(t, filepath.Join("/sys/fs/cgroup", cg, "cpu.weight"), "1")
		checkFile(t, filepath.Join("/sys/fs/cgroup", cg, "memory.max"), strconv.Itoa(48<<20))
	} else {
		checkFile(t, filepath.Join("/sys/fs/cgroup/cpu", cg, "cpu.cfs_quota_us"), "10000")
		checkFile(t, filepath.Join("/sys/fs/cgroup/cpu", cg, "cpu.cfs_period_us"), "100000")
		checkFile(t, filepath.Join("/sys/fs/cgroup/cpu", cg, "cpu.shares"), "25") // 25m of 1024 a core
		checkFile(t, filepath.Join("/sys/fs/cgroup/memory", cg, "memory.limit_in_bytes"), strconv.Itoa(48<<20))
		checkFile(t, filepath.Join("/sys/fs/cgroup/memory", cg, "memory.memsw.limit_in_bytes"), strconv.Itoa(48<<20))
	}

	// And it bites: a second of spinning gets about a tenth of a core.
	body := mustGet(t, url(s, "/spin?ms=1000"))
	used, err := strconv.Atoi(body)
	if err != nil {
		t.Fatal(body)
	}
	t.Logf("CPUMillis=100: 1 s of spinning used %d ms of CPU", used/1000)
	if used > 250_000 {
		t.Errorf("1 s of spinning used %d µs of CPU; a 100-millicore limit allows about 100 000", used)
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}
