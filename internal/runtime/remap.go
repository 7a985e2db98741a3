package runtime

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
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
// brought. Pull makes them, in place of containerd's unpacking: an image's
// files are written once, owned as instances need them, not a second time
// as the node's root for nothing to use (that copy cost as much again as
// the re-owning: ~3 s for node:22-slim). A GC reference label on the
// image's config blob, where containerd's own unpacking puts its own, ties
// the top re-owned layer (and so the ones below it) to the image: they
// live as long as some image on the node has that chain, not just while an
// instance uses it, and go with the last such image (PruneImages, then
// containerd's GC).

// remapPrefix begins the name of every re-owned layer snapshot.
const remapPrefix = "zeitwork/userns-"

// withRemappedSnapshot is the container option that makes instance id's
// writable snapshot on img's re-owned layers.
func (r *Runtime) withRemappedSnapshot(id string, img client.Image, base uint32) client.NewContainerOpts {
	return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
		if ctr.Snapshotter == "" {
			ctr.Snapshotter = defaults.DefaultSnapshotter
		}
		parent, err := r.remapImage(ctx, img, ctr.Snapshotter, base)
		if err != nil {
			return err
		}
		if _, err := c.SnapshotService(ctr.Snapshotter).Prepare(ctx, id, parent); err != nil {
			return err
		}
		ctr.SnapshotKey = id
		ctr.Image = img.Name()
		return nil
	}
}

// remapImage makes (or finds) the re-owned snapshot of each of img's
// layers, ties the top one to the image, and returns its name.
func (r *Runtime) remapImage(ctx context.Context, img client.Image, snName string, base uint32) (string, error) {
	// Until the label ties them to the image, a lease keeps the layers
	// made from containerd's GC (Create's own, when it calls).
	ctx, done, err := r.client.WithLease(ctx)
	if err != nil {
		return "", fmt.Errorf("re-own the image's layers: lease: %w", err)
	}
	defer func() { _ = done(context.WithoutCancel(ctx)) }()

	cs := img.ContentStore()
	manifest, err := images.Manifest(ctx, cs, img.Target(), img.Platform())
	if err != nil {
		return "", fmt.Errorf("re-own the image's layers: %w", err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return "", fmt.Errorf("re-own the image's layers: %w", err)
	}
	if len(diffIDs) != len(manifest.Layers) {
		return "", fmt.Errorf("re-own the image's layers: %d layers for %d diff ids", len(manifest.Layers), len(diffIDs))
	}
	sn := r.client.SnapshotService(snName)
	parent := ""
	for i, diffID := range diffIDs {
		l := remapLayer{
			blob: manifest.Layers[i], diffID: diffID, parent: parent,
			name: fmt.Sprintf("%s%d/%s", remapPrefix, base, identity.ChainID(diffIDs[:i+1])), base: base,
		}
		if err := r.remapLayer(ctx, cs, sn, l); err != nil {
			return "", fmt.Errorf("re-own layer %d (%s): %w", i+1, diffID, err)
		}
		parent = l.name
	}
	if err := remapAnchor(ctx, cs, manifest.Config.Digest, remapLabel(snName, base), parent); err != nil {
		return "", fmt.Errorf("re-own the image's layers: %w", err)
	}
	return parent, nil
}

// remapLabel is the key of the GC reference label on an image's config
// blob to its top re-owned layer. containerd follows a
// "containerd.io/gc.ref.snapshot.<snapshotter>" label with any suffix.
func remapLabel(snName string, base uint32) string {
	return fmt.Sprintf("containerd.io/gc.ref.snapshot.%s/zeitwork-userns-%d", snName, base)
}

// remapped reports whether img's re-owned layers are there, tied to it.
func (r *Runtime) remapped(ctx context.Context, img client.Image, snName string, base uint32) bool {
	config, err := img.Config(ctx)
	if err != nil {
		return false
	}
	info, err := img.ContentStore().Info(ctx, config.Digest)
	if err != nil {
		return false
	}
	top, ok := info.Labels[remapLabel(snName, base)]
	if !ok {
		return false
	}
	_, err = r.client.SnapshotService(snName).Stat(ctx, top)
	return err == nil
}

// remapLayer is one layer to re-own.
type remapLayer struct {
	blob   ocispec.Descriptor // the compressed layer in the content store
	diffID digest.Digest      // what it must decompress to
	parent string             // the re-owned snapshot below, "" for the first layer
	name   string             // the re-owned snapshot's
	base   uint32             // host id of the instances' uid and gid 0
}

// remapLayer makes l's re-owned snapshot unless it exists. Re-owns of one
// image at once (a pull and the creates after it) take turns per layer:
// the first makes it, the rest find it. Another process on the same
// namespace making it at once loses nothing: the snapshot being made has
// a name of its own, and whichever commit comes second is dropped.
func (r *Runtime) remapLayer(ctx context.Context, cs content.Store, sn snapshots.Snapshotter, l remapLayer) error {
	mu := r.remapLock(l.name)
	mu.Lock()
	defer mu.Unlock()
	if _, err := sn.Stat(ctx, l.name); err == nil {
		return nil
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
	if root, opts, ok := unpackTarget(mounts); ok {
		err = unpackOwnedFrom(ctx, cs, l, root, opts...)
	} else {
		err = mount.WithTempMount(ctx, mounts, func(root string) error {
			return unpackOwnedFrom(ctx, cs, l, root)
		})
	}
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
	return nil
}

// remapAnchor labels the config blob with a GC reference to top under
// key, unless it has it already.
func remapAnchor(ctx context.Context, cs content.Store, config digest.Digest, key, top string) error {
	info, err := cs.Info(ctx, config)
	if err != nil {
		return fmt.Errorf("the image's config: %w", err)
	}
	if info.Labels[key] == top {
		return nil
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	info.Labels[key] = top
	if _, err := cs.Update(ctx, info, "labels."+key); err != nil {
		return fmt.Errorf("label the image's config: %w", err)
	}
	return nil
}

// unpackTarget is the directory a layer can be unpacked into without
// mounting the snapshot being made, as containerd's own differ does: the
// first layer's snapshot is a bind mount of a directory, a later layer's
// an overlay whose upper directory takes the layer, whiteouts as
// overlayfs's own (character devices, opaque directories) and the
// attributes of directories the layer implies from the layers below.
// Writing through an overlay mount instead cost its lookups in the lower
// layers for every file, and its unmount synced the whole upper file
// system (100-200 ms a layer). ok is false for any other kind of mount.
func unpackTarget(mounts []mount.Mount) (root string, opts []archive.ApplyOpt, ok bool) {
	if len(mounts) != 1 || slices.Contains(mounts[0].Options, "ro") {
		return "", nil, false
	}
	m := mounts[0]
	switch m.Type {
	case "bind":
		return m.Source, nil, true
	case "overlay":
		var lower []string
		for _, o := range m.Options {
			if v, found := strings.CutPrefix(o, "upperdir="); found {
				root = v
			} else if v, found := strings.CutPrefix(o, "lowerdir="); found {
				lower = strings.Split(v, ":")
			}
		}
		if root == "" {
			return "", nil, false
		}
		return root, []archive.ApplyOpt{
			archive.WithConvertWhiteout(archive.OverlayConvertWhiteout),
			archive.WithParents(lower),
		}, true
	}
	return "", nil, false
}

// unpackOwnedFrom unpacks l's blob into root with every file's owner
// shifted by l.base, and checks that the blob is the layer the image's
// config names.
func unpackOwnedFrom(ctx context.Context, cs content.Store, l remapLayer, root string, opts ...archive.ApplyOpt) error {
	ra, err := cs.ReaderAt(ctx, l.blob)
	if err != nil {
		return err
	}
	defer ra.Close()
	// Each read of the blob is a call to containerd: read it in large
	// ones, not in the decompressor's 32 KiB.
	dc, err := compression.DecompressStream(bufio.NewReaderSize(content.NewReader(ra), 1<<20))
	if err != nil {
		return err
	}
	defer dc.Close()
	digester := digest.Canonical.Digester()
	rd := io.TeeReader(dc, digester.Hash())
	dirs := map[string]bool{".": true} // the parent directories of the layer's entries
	opts = append(opts, archive.WithFilter(func(h *tar.Header) (bool, error) {
		if h.Uid < 0 || h.Uid >= userNSSize || h.Gid < 0 || h.Gid >= userNSSize {
			return false, fmt.Errorf("%s is owned by %d:%d, outside the %d ids an instance maps", h.Name, h.Uid, h.Gid, userNSSize)
		}
		h.Uid += int(l.base)
		h.Gid += int(l.base)
		for d := filepath.Dir(h.Name); !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
		return true, nil
	}))
	if _, err := archive.Apply(ctx, root, rd, opts...); err != nil {
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
	// the unpacking, as the node's root unless a layer below has them:
	// the first layer's root (a tar never sets it), an upper directory's
	// root, and any new parent the layer left out. Everything the
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
