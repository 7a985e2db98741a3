package source_test

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/source"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// An archive the CLI uploaded to the local MinIO comes back out and
// unpacks; a key that was never uploaded is ErrNotFound.
func TestFromS3(t *testing.T) {
	env := testenv.S3(t)
	u, err := url.Parse(env.S3Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	key, secret := os.Getenv("S3_ACCESS_KEY_ID"), os.Getenv("S3_SECRET_ACCESS_KEY")
	if key == "" {
		key, secret = "zeitwork", "zeitwork-dev-secret" // scripts/deps.sh's dev credentials
	}
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(key, secret, ""), Secure: u.Scheme == "https"})
	if err != nil {
		t.Fatal(err)
	}

	archive := tgz(t, file("package.json", "{}"), exe("bin/start", "#!/bin/sh\n"))
	objKey := "test/source/" + uuid.NewString() + ".tar.gz"
	if _, err := mc.PutObject(t.Context(), env.S3Bucket, objKey, bytes.NewReader(archive), int64(len(archive)),
		minio.PutObjectOptions{ContentType: "application/gzip"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.RemoveObject(t.Context(), env.S3Bucket, objKey, minio.RemoveObjectOptions{}) })

	body, err := source.FromS3(t.Context(), mc, env.S3Bucket, objKey)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "ctx")
	_, err = source.Unpack(t.Context(), body, dst, source.Limits{})
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tree(t, dst), "bin/\nbin/start 755 \"#!/bin/sh\\n\"\npackage.json 644 \"{}\""; got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}

	if _, err := source.FromS3(t.Context(), mc, env.S3Bucket, "test/source/never-uploaded.tar.gz"); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("missing key: err = %v, want ErrNotFound", err)
	}
}
