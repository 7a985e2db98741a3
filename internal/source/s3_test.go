package source_test

import (
	"bytes"
	"errors"
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
	mc, err := minio.New(env.Host(), &minio.Options{Creds: credentials.NewStaticV4(env.AccessKeyID, env.SecretAccessKey.Reveal(), ""), Secure: env.Secure()})
	if err != nil {
		t.Fatal(err)
	}

	archive := tgz(t, file("package.json", "{}"), exe("bin/start", "#!/bin/sh\n"))
	objKey := "test/source/" + uuid.NewString() + ".tar.gz"
	if _, err := mc.PutObject(t.Context(), env.Bucket, objKey, bytes.NewReader(archive), int64(len(archive)),
		minio.PutObjectOptions{ContentType: "application/gzip"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.RemoveObject(t.Context(), env.Bucket, objKey, minio.RemoveObjectOptions{}) })

	body, err := source.FromS3(t.Context(), mc, env.Bucket, objKey)
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

	if _, err := source.FromS3(t.Context(), mc, env.Bucket, "test/source/never-uploaded.tar.gz"); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("missing key: err = %v, want ErrNotFound", err)
	}
}
