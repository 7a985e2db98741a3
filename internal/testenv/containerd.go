package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// RemoveContainerdNamespace removes the containerd namespace ns when the
// test ends: its containers (killed), images, leases, snapshots and
// content, then the namespace itself. Only for a namespace the test made:
// it never looks at any other, so a running `zeitwork dev` is untouched.
// Cleanups run last-registered first, so call it before starting whatever
// runs containers in ns.
func RemoveContainerdNamespace(t testing.TB, ns string) {
	t.Helper()
	addr := Containerd(t)
	t.Cleanup(func() {
		c, err := client.New(addr)
		if err != nil {
			t.Errorf("clean up containerd namespace %s: %v", ns, err)
			return
		}
		defer c.Close()
		if err := deleteNamespace(c, ns); err != nil {
			t.Errorf("clean up containerd namespace %s: %v", ns, err)
		}
	})
}

// DeleteContainerdNamespace is RemoveContainerdNamespace's work, at once,
// for programs without a test (the benchmarks under bench/): ns and all
// that is in it are removed. Only for a namespace the caller made.
func DeleteContainerdNamespace(addr, ns string) error {
	c, err := client.New(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return deleteNamespace(c, ns)
}

// removeNamespaceIfThere is RemoveContainerdNamespace's work for a name
// that may never have been made (a test platform's unused node).
func removeNamespaceIfThere(t testing.TB, addr, ns string) {
	c, err := client.New(addr)
	if err != nil {
		return // no containerd: nothing can be in it
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := c.NamespaceService().List(ctx)
	if err != nil || !slices.Contains(all, ns) {
		return
	}
	if err := deleteNamespace(c, ns); err != nil {
		t.Errorf("clean up containerd namespace %s: %v", ns, err)
	}
}

// deleteNamespace removes everything left in ns, then the namespace, then
// the parent cgroups runc made for it.
func deleteNamespace(c *client.Client, ns string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), time.Minute)
	defer cancel()
	var errs []error
	ctrs, err := c.Containers(ctx)
	errs = append(errs, err)
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if ch, err := task.Wait(ctx); err == nil {
				if task.Kill(ctx, syscall.SIGKILL, client.WithKillAll) == nil {
					select {
					case <-ch:
					case <-time.After(10 * time.Second):
					}
				}
			}
			if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	imgs, err := c.ImageService().List(ctx)
	errs = append(errs, err)
	for _, img := range imgs {
		errs = append(errs, c.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()))
	}
	ls, err := c.LeasesService().List(ctx)
	errs = append(errs, err)
	for _, l := range ls {
		errs = append(errs, c.LeasesService().Delete(ctx, l, leases.SynchronousDelete))
	}
	// Unpacked layers are not referenced by anything once the image is gone,
	// but GC may not have run for them yet (it runs after many changes, or
	// when asked to wait for it): ask for it, then remove what is left,
	// children first. containerd 1.6's GC can leave a snapshot's parent
	// naming the child it collected, and an explicit remove of that parent
	// then fails for good ("cannot remove snapshot with child"), while a
	// GC takes it: so a round that cannot remove everything asks for GC
	// again. containerd's own GC may also be removing some at the same
	// time, so a remove that fails is tried again on the next round; only
	// what is still there after 30 s is an error.
	errs = append(errs, collectGarbage(ctx, c))
	sn := c.SnapshotService("")
	var left []string
	why := map[string]error{} // each leaf's last failed remove, for the error
	for deadline, round := time.Now().Add(30*time.Second), 0; ; round++ {
		if round > 0 {
			time.Sleep(20 * time.Millisecond)
			if round%10 == 0 {
				errs = append(errs, collectGarbage(ctx, c))
			}
		}
		var keys []string
		parents := map[string]bool{}
		if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			keys = append(keys, info.Name)
			if info.Parent != "" {
				parents[info.Parent] = true
			}
			return nil
		}); err != nil {
			errs = append(errs, err)
			break
		}
		if left = keys; len(keys) == 0 || time.Now().After(deadline) {
			break
		}
		for _, k := range keys {
			if parents[k] {
				continue
			}
			if err := sn.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
				why[k] = err // still there next round: tried again
			}
		}
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("snapshots left in %s: %v (last errors: %v)", ns, left, why))
	}
	errs = append(errs, c.ContentStore().Walk(ctx, func(info content.Info) error {
		if err := c.ContentStore().Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	}))
	// A GC that is still finishing leaves the namespace not yet empty.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := c.NamespaceService().Delete(ctx, ns)
		if err == nil || !errdefs.IsFailedPrecondition(err) || time.Now().After(deadline) {
			errs = append(errs, err)
			break
		}
	}
	for _, ctl := range []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "unified", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", ctl, ns))
	}
	return errors.Join(errs...)
}

// collectGarbage has containerd collect garbage now, and waits for it:
// deleting a lease made for this with SynchronousDelete is the client's
// way to ask.
func collectGarbage(ctx context.Context, c *client.Client) error {
	l, err := c.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Minute))
	if err != nil {
		return fmt.Errorf("lease to collect garbage: %w", err)
	}
	return c.LeasesService().Delete(ctx, l, leases.SynchronousDelete)
}
