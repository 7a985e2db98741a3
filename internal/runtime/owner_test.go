package runtime_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// Two platforms on one containerd may share a namespace (a test run next to
// `zeitwork dev`). An agent adopts, garbage-collects and reports only what
// its own Runtime created: another owner's running instance, and a
// container with no owner label at all, survive everything it does.
func TestForeignContainersAreNeverTouched(t *testing.T) {
	e := newEnv(t)
	mine := e.runtime(t)
	theirs := e.runtime(t, func(c *runtime.Config) { c.Owner = "other-platform" })
	ctx := ctxFor(t, 2*time.Minute)

	foreign := e.spec(t, map[string]string{"GREETING": "foreign"})
	pullCreateStart(t, theirs, foreign)
	before := waitFor(t, theirs, foreign.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateRunning })

	// A container someone made by hand, carrying the instance label only:
	// what every instance looked like before owners existed.
	unlabelled := id.New()
	img, err := e.raw.GetImage(ctx, e.image)
	if err != nil {
		t.Fatal(err)
	}
	// Unpacked as it is: the Runtime pulled it into re-owned layers only.
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.raw.NewContainer(ctx, unlabelled.String(),
		client.WithNewSnapshot(unlabelled.String(), img),
		client.WithContainerLabels(map[string]string{"dev.zeitwork.instance": unlabelled.String()}),
		client.WithNewSpec(oci.WithImageConfig(img)),
	); err != nil {
		t.Fatal(err)
	}

	events, err := mine.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Adoption: nothing of the others is ours.
	list, err := mine.List(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("List = %+v, %v; want nothing (both containers are foreign)", list, err)
	}
	for _, iid := range []struct {
		name string
		id   uuid.UUID
	}{{"foreign", foreign.InstanceID}, {"unlabelled", unlabelled}} {
		if st, err := mine.Status(ctx, iid.id); err != nil || st.State != runtime.StateMissing {
			t.Errorf("Status of the %s container = %+v, %v; want missing", iid.name, st, err)
		}
		// Garbage collection: the agent stops what it does not want.
		if err := mine.Stop(ctx, iid.id, time.Second); err != nil {
			t.Errorf("Stop of the %s container: %v", iid.name, err)
		}
		if err := mine.Start(ctx, iid.id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("Start of the %s container: %v, want ErrNotFound", iid.name, err)
		}
	}
	if err := mine.Create(ctx, foreign); !errors.Is(err, runtime.ErrExists) || !strings.Contains(err.Error(), `"other-platform"`) {
		t.Errorf("Create over the foreign container: %v, want ErrExists naming its owner", err)
	}

	after, err := theirs.Status(ctx, foreign.InstanceID)
	if err != nil || after.State != runtime.StateRunning || after.PID != before.PID || !after.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("foreign instance after the other agent's cleanup: %+v, %v; want %+v", after, err, before)
	}
	if body := mustGet(t, url(foreign, "/")); body != "foreign" {
		t.Fatalf("foreign instance answers %q", body)
	}
	if _, err := e.raw.LoadContainer(ctx, unlabelled.String()); err != nil {
		t.Fatalf("unlabelled container gone: %v", err)
	}

	// The foreign instance crashes: its owner hears of it, we do not. Our
	// own instance exiting afterwards must be the first thing we hear.
	theirEvents, err := theirs.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	task, err := mustLoadTask(ctx, e, foreign.InstanceID.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, theirEvents, foreign.InstanceID, runtime.EventExit)
	own := e.spec(t, map[string]string{"EXIT_CODE": "4"})
	pullCreateStart(t, mine, own)
	select {
	case ev := <-events:
		if ev.InstanceID != own.InstanceID || ev.Kind != runtime.EventExit || ev.ExitCode != 4 {
			t.Fatalf("first event = %+v, want our instance's exit with code 4", ev)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no event for our own instance")
	}
	if list, err := mine.List(ctx); err != nil || len(list) != 1 || list[0].InstanceID != own.InstanceID {
		t.Fatalf("List = %+v, %v; want only our instance", list, err)
	}
}

func mustLoadTask(ctx context.Context, e *env, cid string) (client.Task, error) {
	ctr, err := e.raw.LoadContainer(ctx, cid)
	if err != nil {
		return nil, err
	}
	return ctr.Task(ctx, nil)
}
