package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/uuid"
)

// Download writes the image as an OCI archive (a tar of an OCI image
// layout: oci-layout, index.json, blobs/sha256/...) to w, streaming every
// blob from the registry without holding it in memory or on disk.
func (s Store) Download(ctx context.Context, id uuid.UUID, w io.Writer) error {
	img, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	ref, err := s.Registry.ref(img.Repository + "@" + img.Digest)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, s.Registry.options(ctx)...)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", ref, err)
	}

	tw := tar.NewWriter(w)
	a := archive{tw: tw, seen: map[v1.Hash]bool{}, mtime: img.CreatedAt}
	if err := a.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		if err := a.index(idx); err != nil {
			return err
		}
	} else {
		im, err := desc.Image()
		if err != nil {
			return err
		}
		if err := a.image(im); err != nil {
			return err
		}
	}
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIImageIndex,
		"manifests": []map[string]any{{
			"mediaType":   desc.MediaType,
			"digest":      desc.Digest.String(),
			"size":        desc.Size,
			"annotations": map[string]string{"org.opencontainers.image.ref.name": img.Tag},
		}},
	}
	raw, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := a.file("index.json", raw); err != nil {
		return err
	}
	return tw.Close()
}

type archive struct {
	tw    *tar.Writer
	seen  map[v1.Hash]bool
	mtime time.Time
}

func (a *archive) file(name string, content []byte) error {
	if err := a.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: a.mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := a.tw.Write(content)
	return err
}

func (a *archive) blob(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	if a.seen[h] {
		return nil
	}
	a.seen[h] = true
	rc, err := open()
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	defer rc.Close()
	if err := a.tw.WriteHeader(&tar.Header{Name: "blobs/" + h.Algorithm + "/" + h.Hex, Mode: 0o644, Size: size, ModTime: a.mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.Copy(a.tw, rc); err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

func (a *archive) raw(h v1.Hash, content []byte) error {
	return a.blob(h, int64(len(content)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(content)), nil
	})
}

func (a *archive) image(im v1.Image) error {
	manifest, err := im.RawManifest()
	if err != nil {
		return err
	}
	digest, err := im.Digest()
	if err != nil {
		return err
	}
	if err := a.raw(digest, manifest); err != nil {
		return err
	}
	config, err := im.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := im.ConfigName()
	if err != nil {
		return err
	}
	if err := a.raw(configName, config); err != nil {
		return err
	}
	layers, err := im.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		if err := a.blob(h, size, l.Compressed); err != nil {
			return err
		}
	}
	return nil
}

func (a *archive) index(idx v1.ImageIndex) error {
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if err := a.raw(digest, raw); err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := a.index(child); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			child, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			if err := a.image(child); err != nil {
				return err
			}
		}
	}
	return nil
}
