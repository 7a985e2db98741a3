package runtime_test

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// reowned lists the re-owned layer snapshots of the test's namespace.
func (e *env) reowned(t *testing.T) []string {
	t.Helper()
	reowned, _ := e.committed(t)
	return reowned
}

// committed lists the committed snapshots of the test's namespace: the
// re-owned layers, and the others (the image's layers unpacked as they
// are).
func (e *env) committed(t *testing.T) (reowned, others []string) {
	t.Helper()
	err := e.raw.SnapshotService("overlayfs").Walk(e.nsCtx(), func(_ context.Context, info snapshots.Info) error {
		switch {
		case info.Kind != snapshots.KindCommitted:
		case strings.HasPrefix(info.Name, "zeitwork/userns-"):
			reowned = append(reowned, info.Name)
		default:
			others = append(others, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(reowned)
	return reowned, others
}

func (e *env) nsCtx() context.Context {
	return namespaces.WithNamespace(context.Background(), e.ns)
}

// collect runs containerd's garbage collector on the namespace and waits
// for it: deleting a lease synchronously does.
func (e *env) collect(t *testing.T) {
	t.Helper()
	ls := e.raw.LeasesService()
	l, err := ls.Create(e.nsCtx(), leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Delete(e.nsCtx(), l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
}

// layers is how many layers image ref has.
func (e *env) layers(t *testing.T, ref string) int {
	t.Helper()
	img, err := e.raw.GetImage(e.nsCtx(), ref)
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := img.RootFS(e.nsCtx())
	if err != nil {
		t.Fatal(err)
	}
	return len(diffIDs)
}

// TestConcurrentCreatesOfOneImage: creates of one image at once, with user
// namespaces, all succeed (one makes each re-owned layer, the others wait
// for it and then go on side by side), the re-owned layers outlive the
// instances, and they go with the image and are made again when it comes
// back.
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
	first := createAll("first creates")
	layers := e.layers(t, e.image)
	made := e.reowned(t)
	if len(made) != layers {
		t.Fatalf("%d re-owned layers after creates of a %d-layer image: %v", len(made), layers, made)
	}
	stopAll(first)

	// No instance stands on them now; the image keeps them.
	e.collect(t)
	if left := e.reowned(t); len(left) != layers {
		t.Fatalf("re-owned layers after the instances went and a GC: %v, want the %d made", left, layers)
	}

	// They go with the image, and come back with it.
	if err := e.raw.ImageService().Delete(e.nsCtx(), e.image, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if left := e.reowned(t); len(left) > 0 {
		t.Fatalf("re-owned layers still there after their image was removed: %v", left)
	}
	if err := r.Pull(ctx, e.image, nil); err != nil {
		t.Fatal(err)
	}
	specs := createAll("creates after the image came back")
	if again := e.reowned(t); len(again) != layers {
		t.Fatalf("%d re-owned layers after the image came back, want %d", len(again), layers)
	}
	for _, s := range specs {
		if err := r.Start(ctx, s.InstanceID); err != nil {
			t.Fatal(err)
		}
		mustGet(t, url(s, "/"))
	}
	stopAll(specs)
}

var layered struct {
	once       sync.Once
	base, next string
	err        error
}

// layeredImages builds two images on the test image: base adds layers
// with files of other owners, a setuid copy of busybox, a hard link, and
// a RUN that deletes a file and replaces a directory of a lower layer (a
// whiteout and an opaque directory); next is base plus one small layer.
func layeredImages(t *testing.T, e *env) (base, next string) {
	t.Helper()
	bkAddr := testenv.Buildkit(t)
	layered.once.Do(func() {
		build := func(name, dockerfile string, files map[string]string) (string, error) {
			dir := t.TempDir()
			files["Dockerfile"] = dockerfile
			for n, c := range files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755); err != nil {
					return "", err
				}
				if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
					return "", err
				}
			}
			ref := e.reg + "/zeitwork-test/" + name + ":" + id.New().String()
			return ref, solve(bkAddr, ref, dir)
		}
		layered.base, layered.err = build("layered", fmt.Sprintf(`FROM %s
COPY --chown=1000:1001 owned.txt /data/owned.txt
COPY gone.txt /gone.txt
COPY old/ /dir/
RUN ["/bin/busybox", "sh", "-c", "rm /gone.txt && rm -rf /dir && mkdir /dir && echo new > /dir/new && /bin/busybox cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && echo linked > /data/h1 && chown 1002:1003 /data/h1 && ln /data/h1 /data/h2"]
`, e.image), map[string]string{"owned.txt": "owned\n", "gone.txt": "gone\n", "old/a": "a\n", "old/b": "b\n"})
		if layered.err != nil {
			return
		}
		layered.next, layered.err = build("layered-next", fmt.Sprintf("FROM %s\nCOPY next.txt /next.txt\n", layered.base),
			map[string]string{"next.txt": "next\n"})
	})
	if layered.err != nil {
		t.Fatalf("layered test images: %v", layered.err)
	}
	return layered.base, layered.next
}

// TestImagesShareTheirReownedLayers: an instance's files, re-owned into
// its user namespace, are the image's as the image says (owners other
// than root, deleted files and replaced directories of lower layers, a
// setuid bit, a hard link), and an image built on another re-owns only
// the layers it adds: the shared ones are the first image's. The pull
// re-owns them and writes no other copy of the image's files. Each image
// keeps its layers until it goes.
func TestImagesShareTheirReownedLayers(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t, func(c *runtime.Config) { c.UserNS = runtime.UserNSOn })
	base, next := layeredImages(t, e)

	// The pull re-owns the layers, and unpacks nothing as they are.
	if err := r.Pull(ctxFor(t, time.Minute), base, nil); err != nil {
		t.Fatal(err)
	}
	baseLayers := e.layers(t, base)
	if reowned, others := e.committed(t); len(reowned) != baseLayers || len(others) > 0 {
		t.Fatalf("after a pull of a %d-layer image: re-owned layers %v, others %v; want %d and none", baseLayers, reowned, others, baseLayers)
	}

	s := e.spec(t, nil)
	s.Image = base
	pullCreateStart(t, r, s)
	run := func(s runtime.Spec, cmd string) string {
		t.Helper()
		return mustGet(t, url(s, "/run?"+neturl.Values{"arg": {"/bin/busybox", "sh", "-c", cmd}}.Encode()))
	}
	for cmd, want := range map[string]string{
		"stat -c %u:%g /data/owned.txt /server /dir/new": "exit 0\n1000:1001\n0:0\n0:0\n",
		"stat -c %h:%u:%g /data/h2":                      "exit 0\n2:1002:1003\n",
		"stat -c %a /bin/suid":                           "exit 0\n4755\n",
		"ls /dir; test -e /gone.txt || echo gone":        "exit 0\nnew\ngone\n",
	} {
		if got := run(s, cmd); got != want {
			t.Errorf("%s in the instance: %q, want %q", cmd, got, want)
		}
	}
	if got := e.reowned(t); len(got) != baseLayers {
		t.Fatalf("%d re-owned layers for a %d-layer image: %v", len(got), baseLayers, got)
	}

	s2 := e.spec(t, nil)
	s2.Image = next
	pullCreateStart(t, r, s2)
	if got := run(s2, "cat /next.txt; stat -c %u /data/owned.txt"); got != "exit 0\nnext\n1000\n" {
		t.Errorf("the second image's instance: %q", got)
	}
	if got := e.reowned(t); len(got) != baseLayers+1 {
		t.Fatalf("%d re-owned layers after an image of one more layer, want %d: %v", len(got), baseLayers+1, got)
	}

	ctx := ctxFor(t, time.Minute)
	for _, s := range []runtime.Spec{s, s2} {
		if err := r.Stop(ctx, s.InstanceID, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	e.collect(t)
	if got := e.reowned(t); len(got) != baseLayers+1 {
		t.Fatalf("re-owned layers after the instances went: %d, want %d kept by their images", len(got), baseLayers+1)
	}
	if err := e.raw.ImageService().Delete(e.nsCtx(), next, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if got := e.reowned(t); len(got) != baseLayers {
		t.Fatalf("re-owned layers after the second image went: %d, want the first's %d", len(got), baseLayers)
	}
	if err := e.raw.ImageService().Delete(e.nsCtx(), base, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if got := e.reowned(t); len(got) != 0 {
		t.Fatalf("re-owned layers after both images went: %v", got)
	}
}

// TestUserNSTurnedOffUnpacksAPulledImage: an image pulled with user
// namespaces has only re-owned layers; a node whose user namespaces are
// turned off after the pull unpacks it at its create rather than fail.
func TestUserNSTurnedOffUnpacksAPulledImage(t *testing.T) {
	e := newEnv(t)
	on := e.runtime(t, func(c *runtime.Config) { c.UserNS = runtime.UserNSOn })
	if err := on.Pull(ctxFor(t, time.Minute), e.image, nil); err != nil {
		t.Fatal(err)
	}
	if _, others := e.committed(t); len(others) > 0 {
		t.Fatalf("snapshots other than re-owned layers after a pull with user namespaces: %v", others)
	}

	off := e.runtime(t, func(c *runtime.Config) { c.UserNS = runtime.UserNSOff })
	s := e.spec(t, nil)
	ctx := ctxFor(t, time.Minute)
	if err := off.Create(ctx, s); err != nil {
		t.Fatalf("create without user namespaces from an image pulled with them: %v", err)
	}
	if err := off.Start(ctx, s.InstanceID); err != nil {
		t.Fatal(err)
	}
	mustGet(t, url(s, "/"))
	if _, others := e.committed(t); len(others) != e.layers(t, e.image) {
		t.Fatalf("the image's own layers after a create without user namespaces: %v", others)
	}
}
