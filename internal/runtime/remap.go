package runtime

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// With a user namespace, an instance's root is an unprivileged uid on the
// node, so the image's files must belong to the mapped range or root in
// the instance sees them as nobody's. containerd's own way
// (WithUserNSRemappedSnapshot, on a daemon without idmapped mounts) chowns
// a copy of the whole image, every file of every layer, once per image: on
// overlayfs each chown copies the file up, so a new Node.js app's image
// cost seconds on every node it deployed to (3.6 s for node:22-slim here),
// though all but its top layers were the base image every deploy shares.
//
// The Runtime keeps a re-owned snapshot per layer instead: layer i's is
// made on layer i-1's by unpacking the layer's blob from the content store
// with every owner shifted into the range, and it is named for its chain
// (the layers up to it), so every image with the same base layers stands
// on the same re-owned ones and a deploy re-owns only the layers it
// brought. Each one is tied to the image's own snapshot of the same chain
// by a GC reference label: it lives as long as some image on the node has
// that chain unpacked, not just while an instance uses it, and goes with
// the last such image (PruneImages, then containerd's GC).

// remapPrefix begins the name of every re-owned layer snapshot.
const remapPrefix = "zeitwork/userns-"

// withRemappedSnapshot is the container option that makes instance id's
// writable snapshot on img's re-owned layers.
func (r *Runtime) withRemappedSnapshot(id string, img client.Image, base uint32) client.NewContainerOpts {
	return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
		if ctr.Snapshotter == "" {
			ctr.Snapshotter = defaults.DefaultSnapshotter
		}
		sn := c.SnapshotService(ctr.Snapshotter)
		parent, err := r.remappedLayers(ctx, img, sn, ctr.Snapshotter, base)
		if err != nil {
			return fmt.Errorf("re-own the image's layers: %w", err)
		}
		if _, err := sn.Prepare(ctx, id, parent); err != nil {
			return err
		}
		ctr.SnapshotKey = id
		ctr.Image = img.Name()
		return nil
	}
}

// remappedLayers makes (or finds) the re-owned snapshot of each of img's
// layers and returns the top one's name.
func (r *Runtime) remappedLayers(ctx context.Context, img client.Image, sn snapshots.Snapshotter, snName string, base uint32) (string, error) {
	manifest, err := images.Manifest(ctx, img.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		return "", err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return "", err
	}
	if len(diffIDs) != len(manifest.Layers) {
		return "", fmt.Errorf("%d layers for %d diff ids", len(manifest.Layers), len(diffIDs))
	}
	parent := ""
	for i, diffID := range diffIDs {
		chain := identity.ChainID(diffIDs[:i+1]).String()
		l := remapLayer{
			blob: manifest.Layers[i], diffID: diffID, chain: chain, parent: parent,
			name: fmt.Sprintf("%s%d/%s", remapPrefix, base, chain), base: base,
		}
		if err := r.remapLayer(ctx, img.ContentStore(), sn, snName, l); err != nil {
			return "", fmt.Errorf("layer %d (%s): %w", i+1, diffID, err)
		}
		parent = l.name
	}
	return parent, nil
}

// remapLayer is one layer to re-own.
type remapLayer struct {
	blob   ocispec.Descriptor // the compressed layer in the content store
	diffID digest.Digest      // what it must decompress to
	chain  string             // the image's own snapshot of the layers up to this one
	parent string             // the re-owned snapshot below, "" for the first layer
	name   string             // the re-owned snapshot's
	base   uint32             // host id of the instances' uid and gid 0
}

// remapLayer makes l's re-owned snapshot unless it exists, and ties it to
// the image's snapshot of the same chain. Creates of one image at once
// take turns per layer: the first makes it, the rest find it. Another
// process on the same namespace making it at once loses nothing: the
// snapshot being made has a name of its own, and whichever commit comes
// second is dropped.
func (r *Runtime) remapLayer(ctx context.Context, cs content.Store, sn snapshots.Snapshotter, snName string, l remapLayer) error {
	mu := r.remapLock(l.name)
	mu.Lock()
	defer mu.Unlock()
	if _, err := sn.Stat(ctx, l.name); err == nil {
		return remapAnchor(ctx, sn, snName, l)
	} else if !errdefs.IsNotFound(err) {
		return err
	}

	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	making := l.name + "-making-" + hex.EncodeToString(suffix[:])
	mounts, err := sn.Prepare(ctx, making, l.parent)
	if err != nil {
		return err
	}
	err = mount.WithTempMount(ctx, mounts, func(root string) error {
		return unpackOwnedFrom(ctx, cs, l, root)
	})
	if err == nil {
		err = sn.Commit(ctx, l.name, making)
	}
	if err != nil {
		if rerr := sn.Remove(context.WithoutCancel(ctx), making); rerr != nil && !errdefs.IsNotFound(rerr) {
			r.log.WarnContext(ctx, "remove a half-made re-owned layer", "snapshot", making, "error", rerr)
		}
		if !errdefs.IsAlreadyExists(err) { // another process committed it first
			return err
		}
	}
	return remapAnchor(ctx, sn, snName, l)
}

// remapAnchor labels the image's snapshot of l's chain with a GC reference
// to l's re-owned one, unless it has it. The image's snapshot comes back
// unlabelled if the image was removed and pulled again while an instance
// kept the re-owned one alive.
func remapAnchor(ctx context.Context, sn snapshots.Snapshotter, snName string, l remapLayer) error {
	info, err := sn.Stat(ctx, l.chain)
	if err != nil {
		return fmt.Errorf("the image's own snapshot: %w", err)
	}
	key := fmt.Sprintf("containerd.io/gc.ref.snapshot.%s/zeitwork-userns-%d", snName, l.base)
	if info.Labels[key] == l.name {
		return nil
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	info.Labels[key] = l.name
	if _, err := sn.Update(ctx, info, "labels."+key); err != nil {
		return fmt.Errorf("label the image's own snapshot: %w", err)
	}
	return nil
}

// unpackOwnedFrom unpacks l's blob into root with every file's owner
// shifted by l.base, and checks that the blob is the layer the image's
// config names.
func unpackOwnedFrom(ctx context.Context, cs content.Store, l remapLayer, root string) error {
	ra, err := cs.ReaderAt(ctx, l.blob)
	if err != nil {
		return err
	}
	defer ra.Close()
	dc, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return err
	}
	defer dc.Close()
	digester := digest.Canonical.Digester()
	rd := io.TeeReader(dc, digester.Hash())
	dirs := map[string]bool{".": true} // the parent directories of the layer's entries
	if _, err := archive.Apply(ctx, root, rd, archive.WithFilter(func(h *tar.Header) (bool, error) {
		if h.Uid < 0 || h.Uid >= userNSSize || h.Gid < 0 || h.Gid >= userNSSize {
			return false, fmt.Errorf("%s is owned by %d:%d, outside the %d ids an instance maps", h.Name, h.Uid, h.Gid, userNSSize)
		}
		h.Uid += int(l.base)
		h.Gid += int(l.base)
		for d := filepath.Dir(h.Name); !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
		return true, nil
	})); err != nil {
		return err
	}
	// The tar's end may leave padding unread; the digest covers it.
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return err
	}
	if got := digester.Digest(); got != l.diffID {
		return fmt.Errorf("the layer decompresses to %s, not %s", got, l.diffID)
	}
	// Directories the layer has files in but no entry for were made by
	// the unpacking, as the node's root: the first layer's root (a tar
	// never sets it) and any parent the layer left out. Everything the
	// layer itself set is owned from l.base up by now, and so is what
	// lower layers made; only these are still below it.
	for d := range dirs {
		p, err := fs.RootPath(root, d)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // deleted by a later entry of the layer
			}
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Uid < l.base {
			if err := unix.Lchown(p, int(l.base+st.Uid), int(l.base+st.Gid)); err != nil {
				return err
			}
		}
	}
	return nil
}

// remapLock is the lock of one re-owned layer snapshot. Locks are kept for
// the Runtime's life: one small mutex per layer the node ever ran.
func (r *Runtime) remapLock(name string) *sync.Mutex {
	mu, _ := r.remapMu.LoadOrStore(name, &sync.Mutex{})
	return mu.(*sync.Mutex)
}
