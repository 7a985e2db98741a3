package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

func TestStopRemovesEverythingButTheLog(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))

	start := time.Now()
	if err := r.Stop(ctxFor(t, time.Minute), s.InstanceID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The server exits on SIGTERM: the grace period is not waited out.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Stop of an instance that honours SIGTERM took %v", took)
	}
	if st, _ := r.Status(context.Background(), s.InstanceID); st.State != runtime.StateMissing {
		t.Fatalf("after Stop: %+v", st)
	}
	ctx := namespaces.WithNamespace(context.Background(), e.ns)
	if _, err := e.raw.SnapshotService("").Stat(ctx, s.InstanceID.String()); !errdefs.IsNotFound(err) {
		t.Errorf("snapshot after Stop: %v, want not found", err)
	}
	if _, err := os.Stat(filepath.Join(e.logDir, e.ns, s.InstanceID.String()+".log")); err != nil {
		t.Errorf("log file after Stop: %v", err)
	}
	if logs := readLogs(t, r, s); !strings.Contains(logs, "got SIGTERM, exiting") {
		t.Errorf("log lacks the SIGTERM line:\n%s", logs)
	}
	if err := r.Stop(ctxFor(t, time.Minute), s.InstanceID, time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	// The image stays for the next instance until it is removed.
	if err := r.RemoveImage(ctx, s.Image); err != nil {
		t.Fatal(err)
	}
	if _, err := e.raw.GetImage(ctx, s.Image); !errdefs.IsNotFound(err) {
		t.Errorf("image after RemoveImage: %v", err)
	}
	if err := r.RemoveImage(ctx, s.Image); err != nil {
		t.Errorf("second RemoveImage: %v", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, map[string]string{"IGNORE_TERM": "1"})
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))

	const grace = 1500 * time.Millisecond
	start := time.Now()
	if err := r.Stop(ctxFor(t, time.Minute), s.InstanceID, grace); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Stop of an instance that ignores SIGTERM, grace %v: %v", grace, took.Round(time.Millisecond))
	if took < grace || took > grace+5*time.Second {
		t.Errorf("Stop took %v with a grace of %v", took, grace)
	}
	if st, _ := r.Status(context.Background(), s.InstanceID); st.State != runtime.StateMissing {
		t.Fatalf("after Stop: %+v", st)
	}
}

// Stopping an instance whose process already exited, or that was never
// started, removes it just the same.
func TestStopExitedAndCreated(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, time.Minute)

	exited := e.spec(t, map[string]string{"EXIT_CODE": "1"})
	pullCreateStart(t, r, exited)
	waitFor(t, r, exited.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })

	created := e.spec(t, nil)
	if err := r.Create(ctx, created); err != nil {
		t.Fatal(err)
	}
	for _, s := range []runtime.Spec{exited, created} {
		if err := r.Stop(ctx, s.InstanceID, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := r.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List after stopping both: %+v, %v", list, err)
	}
}
