package testenv

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/config"
)

// Bucket makes a bucket of the test's own in MinIO ("zw-test-<what>-" and
// random letters), so that what the test lists, prunes or leaves behind
// touches no other test's objects nor a running `zeitwork dev`'s. It
// returns a client and the S3 configuration naming that bucket; the
// bucket and its objects are deleted when the test ends.
func Bucket(t testing.TB, what string) (*minio.Client, config.S3) {
	t.Helper()
	cfg := S3(t)
	mc, err := minio.New(cfg.Host(), &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey.Reveal(), ""),
		Secure: cfg.Secure(), Region: cfg.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	cfg.Bucket = "zw-test-" + what + "-" + string(b)
	if err := mc.MakeBucket(t.Context(), cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
		t.Fatalf("make bucket %s: %v", cfg.Bucket, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		objs := mc.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true})
		for r := range mc.RemoveObjectsWithResult(ctx, cfg.Bucket, objs, minio.RemoveObjectsOptions{}) {
			if r.Err != nil {
				t.Errorf("clean bucket %s: %v", cfg.Bucket, r.Err)
			}
		}
		if err := mc.RemoveBucket(ctx, cfg.Bucket); err != nil {
			t.Errorf("remove bucket %s: %v", cfg.Bucket, err)
		}
	})
	return mc, cfg
}
