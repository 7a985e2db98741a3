package runtime_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// TestPruneImagesRemovesOnlyUnusedPastGrace: an image in use is kept
// whatever the grace, an unused one is kept within grace and removed after
// it, and an image just pulled (not yet used: an instance on its way) is
// kept on first sight.
func TestPruneImagesRemovesOnlyUnusedPastGrace(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, 2*time.Minute)
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))

	for range 2 {
		if removed, err := r.PruneImages(ctx, 0); err != nil || len(removed) != 0 {
			t.Fatalf("with the image in use: removed %v, %v", removed, err)
		}
	}
	if err := r.Stop(ctx, s.InstanceID, 0); err != nil {
		t.Fatal(err)
	}
	if removed, err := r.PruneImages(ctx, time.Hour); err != nil || len(removed) != 0 {
		t.Fatalf("unused within grace: removed %v, %v", removed, err)
	}
	time.Sleep(20 * time.Millisecond)
	removed, err := r.PruneImages(ctx, 10*time.Millisecond)
	if err != nil || !slices.Equal(removed, []string{s.Image}) {
		t.Fatalf("unused past grace: removed %v, %v; want %s", removed, err, s.Image)
	}
	nsctx := namespaces.WithNamespace(context.Background(), e.ns)
	if _, err := e.raw.GetImage(nsctx, s.Image); !errdefs.IsNotFound(err) {
		t.Fatalf("image still there after prune: %v", err)
	}

	// Pulled again, about to be used: kept even with no grace at all.
	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if removed, err := r.PruneImages(ctx, 0); err != nil || len(removed) != 0 {
		t.Fatalf("just pulled: removed %v, %v", removed, err)
	}
	// And it runs: what the prune left is whole.
	s2 := e.spec(t, map[string]string{"GREETING": "again"})
	pullCreateStart(t, r, s2)
	if got := mustGet(t, url(s2, "/")); got != "again" {
		t.Fatalf("after a prune and a new pull: %q", got)
	}
}
