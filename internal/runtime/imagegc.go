package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// PruneImages removes the images of the Runtime's namespace that no
// container in it (of any owner) has used for grace, and returns their
// names. Nothing else ever removes an image, so without this a node's disk
// fills with every deployment it ever ran.
//
// "Used" is what this process saw: an image it has not seen in use since it
// started counts from the first time it looked, and an image pulled (or
// pulled again) within grace is kept too, so the pull-then-create window of
// a starting instance, and a rollback soon after a deploy, find it there.
// containerd's own garbage collector then frees the layers and snapshots
// nothing else refers to.
func (r *Runtime) PruneImages(ctx context.Context, grace time.Duration) ([]string, error) {
	ctx = r.ns(ctx)
	ctrs, err := r.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: list containers: %w", err)
	}
	inUse := make(map[string]bool, len(ctrs))
	for _, c := range ctrs {
		inUse[c.Image] = true
	}
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: list images: %w", err)
	}

	r.imagesMu.Lock()
	defer r.imagesMu.Unlock()
	now := time.Now()
	seen := make(map[string]bool, len(imgs))
	var removed []string
	for _, img := range imgs {
		seen[img.Name] = true
		last, ok := r.imageUsed[img.Name]
		if inUse[img.Name] || !ok {
			r.imageUsed[img.Name] = now
			continue
		}
		if img.UpdatedAt.After(last) {
			last = img.UpdatedAt
		}
		if now.Sub(last) < grace {
			continue
		}
		if err := r.client.ImageService().Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
			r.log.WarnContext(ctx, "prune image", "image", img.Name, "error", err)
			continue
		}
		delete(r.imageUsed, img.Name)
		removed = append(removed, img.Name)
		r.log.InfoContext(ctx, "removed an image no instance has used", "image", img.Name, "unused_for", now.Sub(last).Round(time.Second))
	}
	for name := range r.imageUsed {
		if !seen[name] {
			delete(r.imageUsed, name)
		}
	}
	return removed, nil
}
