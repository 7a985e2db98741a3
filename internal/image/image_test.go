package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func project(t *testing.T, pool *pgxpool.Pool) uuid.UUID { return testdb.Project(t, pool) }

// pushed pushes a random two-layer image for project and records it.
func pushed(t *testing.T, pool *pgxpool.Pool, reg string, proj uuid.UUID) db.Image {
	t.Helper()
	repo := reg + "/zeitwork-test/" + proj.String()
	tag := id.New().String()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(repo+":"+tag, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	digest, _ := img.Digest()
	row, err := db.New(pool).ImageUpsert(context.Background(), db.ImageUpsertParams{
		ID: id.New(), ProjectID: proj, Repository: repo, Tag: tag, Digest: digest.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return row
}

func TestListGetAndPaging(t *testing.T) {
	reg := testenv.Registry(t)
	pool := testdb.New(t)
	store := image.Store{Pool: pool, Registry: image.Registry{Insecure: true}}
	ctx := context.Background()
	a, b := project(t, pool), project(t, pool)
	a1, a2, b1 := pushed(t, pool, reg, a), pushed(t, pool, reg, a), pushed(t, pool, reg, b)

	page1, err := store.List(ctx, image.ListOptions{Limit: 2})
	if err != nil || len(page1) != 2 || page1[0].ID != b1.ID || page1[1].ID != a2.ID {
		t.Fatalf("page 1 = %v, %v", page1, err)
	}
	page2, err := store.List(ctx, image.ListOptions{Limit: 2, Before: page1[1].ID})
	if err != nil || len(page2) != 1 || page2[0].ID != a1.ID {
		t.Fatalf("page 2 = %v, %v", page2, err)
	}
	onlyB, err := store.List(ctx, image.ListOptions{Limit: 10, ProjectID: &b})
	if err != nil || len(onlyB) != 1 || onlyB[0].ID != b1.ID {
		t.Fatalf("project filter = %v, %v", onlyB, err)
	}
	if _, err := store.Get(ctx, id.New()); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestDownloadIsALoadableOCIArchive(t *testing.T) {
	reg := testenv.Registry(t)
	pool := testdb.New(t)
	store := image.Store{Pool: pool, Registry: image.Registry{Insecure: true}}
	row := pushed(t, pool, reg, project(t, pool))

	var buf bytes.Buffer
	if err := store.Download(context.Background(), row.ID, &buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, h.Name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		content, _ := io.ReadAll(tr)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 || m.Manifests[0].Digest.String() != row.Digest ||
		m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != row.Tag {
		t.Fatalf("index.json = %+v, %v", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	for _, l := range layers {
		// Reading verifies each blob against its digest.
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer content: %v", err)
		}
		rc.Close()
	}
}

func TestDeleteRemovesRowAndManifest(t *testing.T) {
	reg := testenv.Registry(t)
	pool := testdb.New(t)
	store := image.Store{Pool: pool, Registry: image.Registry{Insecure: true}}
	ctx := context.Background()
	row := pushed(t, pool, reg, project(t, pool))
	ref, _ := name.ParseReference(row.Repository+"@"+row.Digest, name.Insecure)

	if err := store.Delete(ctx, row.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, row.ID); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("row still there: %v", err)
	}
	if _, err := remote.Head(ref); err == nil {
		t.Fatal("manifest still in the registry")
	}
	if err := store.Delete(ctx, row.ID); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestDeleteRefusesImagesInUseAndKeepsEverything(t *testing.T) {
	reg := testenv.Registry(t)
	pool := testdb.New(t)
	store := image.Store{Pool: pool, Registry: image.Registry{Insecure: true}}
	ctx := context.Background()
	proj := project(t, pool)
	row := pushed(t, pool, reg, proj)
	if _, err := pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id)
		VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, id.New(), proj, row.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, row.ID); !errors.Is(err, image.ErrInUse) {
		t.Fatalf("delete in use: %v", err)
	}
	ref, _ := name.ParseReference(row.Repository+"@"+row.Digest, name.Insecure)
	if _, err := remote.Head(ref); err != nil {
		t.Fatalf("a refused delete removed the manifest: %v", err)
	}

	// A registry that cannot be reached leaves the row in place.
	other := pushed(t, pool, reg, proj)
	if _, err := pool.Exec(ctx, `UPDATE images SET repository = '127.0.0.1:1/gone' WHERE id = $1`, other.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, other.ID); err == nil {
		t.Fatal("delete succeeded with the registry unreachable")
	}
	if _, err := store.Get(ctx, other.ID); err != nil {
		t.Fatalf("row lost after a failed delete: %v", err)
	}
}
