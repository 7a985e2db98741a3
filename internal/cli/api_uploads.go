package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/upload"
)

// uploadPruneEvery: an upload is deleted within an hour of its keep.
const uploadPruneEvery = time.Hour

// uploadStore is the api's upload store: S3 reached at S3_ENDPOINT, and
// presigned uploads signed for the URL clients reach S3 at.
func uploadStore(s3 config.S3, u config.Uploads) (*upload.Store, error) {
	client := func(variable, endpoint string) (*minio.Client, error) {
		e, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", variable, err)
		}
		// The region is given, so presigning asks S3 nothing.
		mc, err := minio.New(e.Host, &minio.Options{
			Creds:  credentials.NewStaticV4(s3.AccessKeyID, s3.SecretAccessKey.Reveal(), ""),
			Secure: e.Scheme == "https", Region: s3.Region,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", variable, err)
		}
		return mc, nil
	}
	mc, err := client("S3_ENDPOINT", s3.Endpoint)
	if err != nil {
		return nil, err
	}
	store := &upload.Store{S3: mc, Bucket: s3.Bucket, MaxBytes: u.MaxBytes, Expiry: u.Expiry}
	switch {
	case !u.Direct():
	case u.S3URL == "":
		store.Presigner = mc
	default:
		if store.Presigner, err = client("UPLOAD_S3_URL", u.S3URL); err != nil {
			return nil, err
		}
	}
	return store, nil
}

// pruneUploads deletes the uploads older than keep now and then every
// interval, until ctx ends. Every api replica runs it; the deletes are
// idempotent, so they need no coordination.
func pruneUploads(ctx context.Context, s *upload.Store, interval, keep time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Prune(ctx, time.Now().Add(-keep))
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "pruning uploads failed", "err", err)
		case n > 0:
			log.InfoContext(ctx, "pruned uploads", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
