package runtime_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

// TestConcurrentCreatesOfOneImage: creates of one image at once, with user
// namespaces, all succeed, the first time (one of them makes the image's
// re-owned copy, the others wait for it and then go on side by side) and
// again after the copy went behind the Runtime's back (containerd collects
// it with the image's last container): the creates that find the copy
// being made by another try again rather than fail.
func TestConcurrentCreatesOfOneImage(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t, func(c *runtime.Config) { c.UserNS = runtime.UserNSOn })
	ctx := ctxFor(t, 2*time.Minute)
	if err := r.Pull(ctx, e.image, nil); err != nil {
		t.Fatal(err)
	}
	createAll := func(round string) []runtime.Spec {
		specs := make([]runtime.Spec, 6)
		errs := make([]error, len(specs))
		var wg sync.WaitGroup
		for i := range specs {
			specs[i] = e.spec(t, nil)
			wg.Go(func() { errs[i] = r.Create(ctx, specs[i]) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: create %d of %d at once: %v", round, i, len(specs), err)
			}
		}
		return specs
	}
	stopAll := func(specs []runtime.Spec) {
		for _, s := range specs {
			if err := r.Stop(ctx, s.InstanceID, time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The re-owned copy is a committed snapshot with a parent and no
	// labels (an image's layers carry labels). While the first creates'
	// containers stand on it, nothing can take it.
	sn := e.raw.SnapshotService("overlayfs")
	nsCtx := namespaces.WithNamespace(context.Background(), e.ns)
	reowned := func() []string {
		var copies []string
		if err := sn.Walk(nsCtx, func(_ context.Context, info snapshots.Info) error {
			if info.Kind == snapshots.KindCommitted && info.Parent != "" && len(info.Labels) == 0 {
				copies = append(copies, info.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return copies
	}
	first := createAll("first creates")
	copies := reowned()
	if len(copies) == 0 {
		t.Fatal("no re-owned copy of the image after creates with user namespaces")
	}
	stopAll(first)

	// The copy goes, as containerd's GC takes it once no container is
	// left on it; here it is removed at once, unless the GC was first.
	for _, name := range copies {
		if err := sn.Remove(nsCtx, name); err != nil && !errdefs.IsNotFound(err) {
			t.Fatalf("remove the re-owned copy %s: %v", name, err)
		}
	}
	if left := reowned(); len(left) > 0 {
		t.Fatalf("re-owned copies still there after their removal: %v", left)
	}
	specs := createAll("creates after the copy went")
	for _, s := range specs {
		if err := r.Start(ctx, s.InstanceID); err != nil {
			t.Fatal(err)
		}
		mustGet(t, url(s, "/"))
	}
	stopAll(specs)
}
