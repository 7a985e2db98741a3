// Package image owns built images: their rows in the database and their
// manifests and blobs in the registry. It lists and finds them, streams one
// as an OCI archive, and deletes one from both places.
package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
)

var (
	// ErrNotFound: no image with that id.
	ErrNotFound = errors.New("image not found")
	// ErrInUse: a deployment or instance still uses the image.
	ErrInUse = errors.New("image is in use")
)

// Registry is how the operator reaches the registry, with credentials that
// may read and delete any project's images.
type Registry struct {
	Insecure bool
	Username string
	Password string
}

func (r Registry) options(ctx context.Context) []remote.Option {
	auth := authn.Anonymous
	if r.Username != "" {
		auth = &authn.Basic{Username: r.Username, Password: r.Password}
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
}

func (r Registry) ref(s string) (name.Reference, error) {
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(s, opts...)
}

// Store finds, streams and deletes images.
type Store struct {
	Pool     *pgxpool.Pool
	Registry Registry
}

// ListOptions page through images, newest first.
type ListOptions struct {
	ProjectID *uuid.UUID
	Before    uuid.UUID // last id of the previous page; uuid.Nil for the first
	Limit     int
}

// List returns a page of images.
func (s Store) List(ctx context.Context, o ListOptions) ([]db.Image, error) {
	rows, err := db.New(s.Pool).ImageList(ctx, db.ImageListParams{ProjectID: o.ProjectID, Before: o.Before, MaxRows: int32(o.Limit)})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return rows, nil
}

// Get returns one image.
func (s Store) Get(ctx context.Context, id uuid.UUID) (db.Image, error) {
	img, err := db.New(s.Pool).ImageGetByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Image{}, ErrNotFound
	}
	if err != nil {
		return db.Image{}, fmt.Errorf("get image: %w", err)
	}
	return img, nil
}

// Delete removes the image from the database and its manifest from the
// registry. The row goes in a transaction that commits only once the
// registry has let go of the manifest, so a failure leaves both as they
// were. (The registry frees the blobs at its next garbage collection.)
func (s Store) Delete(ctx context.Context, id uuid.UUID) error {
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("delete image: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	q := db.New(tx)
	img, err := q.ImageGetByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete image: %w", err)
	}
	if _, err := q.ImageDelete(ctx, id); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
			return fmt.Errorf("%w: %s", ErrInUse, pgErr.Detail)
		}
		return fmt.Errorf("delete image: %w", err)
	}
	ref, err := s.Registry.ref(img.Repository + "@" + img.Digest)
	if err != nil {
		return fmt.Errorf("delete image: %w", err)
	}
	if err := remote.Delete(ref, s.Registry.options(ctx)...); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete image %s from the registry: %w", ref, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("delete image: %w", err)
	}
	return nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}
