package builder_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func tarGz(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		// A regular file's content is its own name: enough to tell files apart.
		var body []byte
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
			body = []byte(h.Name)
			h.Linkname = ""
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func uploadFetcher(t *testing.T) (builder.SourceFetcher, func(key string, data []byte)) {
	t.Helper()
	e := testenv.S3(t)
	u, _ := url.Parse(e.Endpoint)
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4("zeitwork", "zeitwork-dev-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, data []byte) {
		if _, err := mc.PutObject(context.Background(), e.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return builder.SourceFetcher{S3: mc, Bucket: e.Bucket}, put
}

func TestFetchUploadHonoursRootDirectory(t *testing.T) {
	f, put := uploadFetcher(t)
	key := "test-uploads/" + id.New().String() + ".tar.gz"
	put(key, tarGz(t,
		tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "./apps/web/Dockerfile", Typeflag: tar.TypeReg},
		tar.Header{Name: "./README.md", Typeflag: tar.TypeReg},
	))
	dir, err := f.Fetch(context.Background(), db.Project{RootDirectory: "apps/web"}, db.Deployment{SourceArchiveKey: &key}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "Dockerfile")); err != nil || string(b) != "./apps/web/Dockerfile" {
		t.Fatalf("root directory not honoured: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err == nil {
		t.Fatal("built from the repository root, not the root directory")
	}
}

func TestFetchRefusalsAreUserErrors(t *testing.T) {
	f, put := uploadFetcher(t)
	evil := "test-uploads/" + id.New().String() + ".tar.gz"
	put(evil, tarGz(t, tar.Header{Name: "../../etc/cron.d/x", Typeflag: tar.TypeReg}))
	absLink := "test-uploads/" + id.New().String() + ".tar.gz"
	put(absLink, tarGz(t, tar.Header{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg}))
	missing := "test-uploads/never-uploaded.tar.gz"
	good := "test-uploads/" + id.New().String() + ".tar.gz"
	put(good, tarGz(t, tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "./Dockerfile", Typeflag: tar.TypeReg}))

	for name, tc := range map[string]struct {
		key  string
		root string
	}{
		"dot-dot entry":        {evil, ""},
		"absolute symlink":     {absLink, ""},
		"missing archive":      {missing, ""},
		"root directory gone":  {good, "services/api"},
		"root directory climb": {good, "../.."},
	} {
		t.Run(name, func(t *testing.T) {
			work := t.TempDir()
			_, err := f.Fetch(context.Background(), db.Project{RootDirectory: tc.root}, db.Deployment{SourceArchiveKey: &tc.key}, work)
			var uerr builder.UserError
			if !errors.As(err, &uerr) {
				t.Fatalf("err = %v, want a UserError", err)
			}
		})
	}
}
