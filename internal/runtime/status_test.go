package runtime_test

import (
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

// List reads most instances from one list of the node's tasks, and asks
// about the rest alone, as Status does: for every state an instance can
// be in, the two must say the same.
func TestListAgreesWithStatus(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, 2*time.Minute)

	// Created: a container, no task.
	created := e.spec(t, nil)
	if err := r.Pull(ctx, created.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, created); err != nil {
		t.Fatal(err)
	}
	// A task created and not started: where an instance is between the
	// two halves of Start (fifty starting at once spend passes there).
	taskOnly := e.spec(t, nil)
	if err := r.Create(ctx, taskOnly); err != nil {
		t.Fatal(err)
	}
	rawCtx := namespaces.WithNamespace(ctx, e.ns)
	ctr, err := e.raw.LoadContainer(rawCtx, taskOnly.InstanceID.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.NewTask(rawCtx, cio.NullIO); err != nil {
		t.Fatal(err)
	}
	running := e.spec(t, nil)
	pullCreateStart(t, r, running)
	exited := e.spec(t, map[string]string{"EXIT_CODE": "3"})
	pullCreateStart(t, r, exited)
	waitFor(t, r, exited.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })

	want := map[string]runtime.State{
		created.InstanceID.String():  runtime.StateCreated,
		taskOnly.InstanceID.String(): runtime.StateCreated,
		running.InstanceID.String():  runtime.StateRunning,
		exited.InstanceID.String():   runtime.StateExited,
	}
	// Only the instance without a task and the exited one (whose OOM mark
	// is read from its task) are asked about alone.
	alone := 0
	runtime.SetAfterMarksRead(func() { alone++ })
	list, err := r.List(ctx)
	runtime.SetAfterMarksRead(nil)
	if err != nil {
		t.Fatal(err)
	}
	if alone != 2 {
		t.Errorf("List asked about %d instances alone, want 2 (the others are in the task list)", alone)
	}
	if len(list) != len(want) {
		t.Fatalf("List has %d instances, want %d: %+v", len(list), len(want), list)
	}
	for _, got := range list {
		st, err := r.Status(ctx, got.InstanceID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != want[got.InstanceID.String()] {
			t.Errorf("%s listed as %s, want %s", got.InstanceID, got.State, want[got.InstanceID.String()])
		}
		if got != st {
			t.Errorf("List and Status disagree on %s:\nlist   %+v\nstatus %+v", got.InstanceID, got, st)
		}
	}
	for _, st := range list {
		switch st.InstanceID {
		case running.InstanceID:
			if st.PID == 0 {
				t.Errorf("running instance listed without a PID: %+v", st)
			}
		case exited.InstanceID:
			if st.ExitCode != 3 || st.ExitedAt.IsZero() {
				t.Errorf("exited instance listed as %+v, want exit code 3 and a time", st)
			}
		}
	}
}
