package source

import (
	"context"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// FromS3 opens the archive a CLI uploaded to bucket/key. The body streams
// from S3 as it is read; the caller closes it. A missing object is
// ErrNotFound.
func FromS3(ctx context.Context, client *minio.Client, bucket, key string) (io.ReadCloser, error) {
	obj, err := client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("source: get s3://%s/%s: %w", bucket, key, err)
	}
	// GetObject sends nothing until first used: Stat makes the request now,
	// so a missing upload is reported here, not as a broken archive later.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		switch minio.ToErrorResponse(err).Code {
		case "NoSuchKey", "NoSuchBucket":
			return nil, fmt.Errorf("source: %w: s3://%s/%s", ErrNotFound, bucket, key)
		}
		return nil, fmt.Errorf("source: get s3://%s/%s: %w", bucket, key, err)
	}
	return obj, nil
}
