package api

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/source"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
)

const testUploadMax = 64 << 10

// withUploads gives the env's API an upload store on a bucket of the
// test's own; direct: clients may reach S3.
func (e *env) withUploads(direct bool) *upload.Store {
	e.t.Helper()
	mc, cfg := testenv.Bucket(e.t, "api")
	s := &upload.Store{S3: mc, Bucket: cfg.Bucket, MaxBytes: testUploadMax, Expiry: time.Minute}
	if direct {
		s.Presigner = mc
	}
	e.api.Uploads = s
	return s
}

// tgz is a gzip-compressed tar of one file.
func tgz(t *testing.T, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// objects lists the keys in the store's bucket and its unfinished
// multipart uploads.
func objects(t *testing.T, s *upload.Store) []string {
	t.Helper()
	var keys []string
	for o := range s.S3.ListObjects(t.Context(), s.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	for u := range s.S3.ListIncompleteUploads(t.Context(), s.Bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		keys = append(keys, "incomplete:"+u.Key)
	}
	return keys
}

// builtFrom checks that the deployment's row names key, and that the
// archive there unpacks (as the builder unpacks it) to file with content.
func (e *env) builtFrom(s *upload.Store, deployment Deployment, key, file, content string) {
	e.t.Helper()
	var stored *string
	if err := e.pool().QueryRow(e.t.Context(), `SELECT source_archive_key FROM deployments WHERE id = $1`, deployment.ID).Scan(&stored); err != nil {
		e.t.Fatal(err)
	}
	if stored == nil || *stored != key || deployment.ArchiveKey != key {
		e.t.Fatalf("deployment's archive key: row %v, answer %q; want %q", stored, deployment.ArchiveKey, key)
	}
	rc, err := source.FromS3(e.t.Context(), s.S3, s.Bucket, *stored)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	dst := filepath.Join(e.t.TempDir(), "src")
	if _, err := source.Unpack(e.t.Context(), rc, dst, source.Limits{}); err != nil {
		e.t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, file)); err != nil || string(got) != content {
		e.t.Fatalf("%s in the archive: %q, %v; want %q", file, got, err, content)
	}
}

// A member asks for an upload, sends the archive straight to S3 with the
// presigned form, and deploys it; S3 itself refuses an archive over the
// limit.
func TestPresignedUploadDeploys(t *testing.T) {
	e := newEnv(t)
	s := e.withUploads(true)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)

	res := e.do("POST", "/v1/projects/"+p.ID.String()+"/uploads", "", bearer(alice)...)
	if res.Code != http.StatusCreated {
		t.Fatalf("POST uploads: %d %s", res.Code, res.body)
	}
	var up Upload
	res.decode(t, &up)
	if up.Method != UploadPost || up.Key != upload.Key(p.ID, up.ID) || up.MaxBytes != testUploadMax || up.ExpiresAt == nil || len(up.Fields) == 0 ||
		!strings.HasPrefix(up.URL, "http") {
		t.Fatalf("upload: %+v", up)
	}
	if !strings.HasPrefix(up.Key, "uploads/"+p.ID.String()+"/") || !strings.HasSuffix(up.Key, ".tar.gz") {
		t.Fatalf("key %q is not uploads/<project>/….tar.gz", up.Key)
	}

	hc := &http.Client{Timeout: time.Minute}
	big := make([]byte, testUploadMax+1)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := upload.Post(t.Context(), hc, up.URL, up.Fields, bytes.NewReader(big), int64(len(big))); err == nil || !strings.Contains(err.Error(), "EntityTooLarge") {
		t.Fatalf("over the limit: %v, want S3's EntityTooLarge", err)
	}
	if keys := objects(t, s); len(keys) != 0 {
		t.Fatalf("a refused upload left %v", keys)
	}

	archive := tgz(t, "index.js", "console.log('hi')\n")
	if err := upload.Post(t.Context(), hc, up.URL, up.Fields, bytes.NewReader(archive), int64(len(archive))); err != nil {
		t.Fatal(err)
	}
	d := e.deploy(alice, fmt.Sprintf(`{"project_id":"%s","archive_key":"%s"}`, p.ID, up.Key))
	e.builtFrom(s, d, up.Key, "index.js", "console.log('hi')\n")
}

// put streams body to the upload route; size -1 sends it chunked.
func (e *env) put(u user, path string, body []byte, size int64) response {
	e.t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if size < 0 {
		r = io.MultiReader(r) // hides the length
	}
	req := httptest.NewRequest("PUT", path, r)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/gzip")
	for i, h := 0, bearer(u); i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return response{rec, rec.Body.String()}
}

// Where S3 is out of clients' reach, the API says PUT, takes the archive
// as a stream, and refuses one over the limit with a 413, leaving nothing
// in S3.
func TestStreamedUploadDeploys(t *testing.T) {
	e := newEnv(t)
	s := e.withUploads(false)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)

	res := e.do("POST", "/v1/projects/"+p.ID.String()+"/uploads", "", bearer(alice)...)
	if res.Code != http.StatusCreated {
		t.Fatalf("POST uploads: %d %s", res.Code, res.body)
	}
	var up Upload
	res.decode(t, &up)
	if want := "/v1/projects/" + p.ID.String() + "/uploads/" + up.ID.String(); up.Method != UploadPut || up.URL != want ||
		up.Key != upload.Key(p.ID, up.ID) || up.Fields != nil || up.ExpiresAt != nil || up.MaxBytes != testUploadMax {
		t.Fatalf("upload: %+v", up)
	}

	big := make([]byte, testUploadMax+1)
	for _, size := range []int64{int64(len(big)), -1} {
		res := e.put(alice, up.URL, big, size)
		if res.Code != http.StatusRequestEntityTooLarge || res.Header().Get("Content-Type") != "application/problem+json" ||
			res.Header().Get("Connection") != "close" || !strings.Contains(res.body, fmt.Sprint(testUploadMax)) {
			t.Fatalf("over the limit (length %d): %d %v %s", size, res.Code, res.Header(), res.body)
		}
		if keys := objects(t, s); len(keys) != 0 {
			t.Fatalf("a refused upload left %v", keys)
		}
	}
	if res := e.put(alice, "/v1/projects/"+p.ID.String()+"/uploads/not-a-uuid", []byte("x"), 1); res.Code != http.StatusUnprocessableEntity {
		t.Fatalf("upload_id not a UUID: %d %s", res.Code, res.body)
	}

	archive := tgz(t, "main.go", "package main\n")
	for _, size := range []int64{int64(len(archive)), -1} {
		up := up
		if size < 0 {
			up.ID = id.New()
			up.URL, up.Key = "/v1/projects/"+p.ID.String()+"/uploads/"+up.ID.String(), upload.Key(p.ID, up.ID)
		}
		res := e.put(alice, up.URL, archive, size)
		var stored StoredUpload
		if res.Code != http.StatusCreated {
			t.Fatalf("PUT (length %d): %d %s", size, res.Code, res.body)
		}
		res.decode(t, &stored)
		if stored.ID != up.ID || stored.Key != up.Key || stored.Size != int64(len(archive)) {
			t.Fatalf("stored %+v, want %s of %d bytes", stored, up.Key, len(archive))
		}
		d := e.deploy(alice, fmt.Sprintf(`{"project_id":"%s","archive_key":"%s"}`, p.ID, stored.Key))
		e.builtFrom(s, d, stored.Key, "main.go", "package main\n")
	}
}

// With S3 configured, a deployment's archive must exist under its own
// project's prefix and be within the limit; a refused one writes nothing.
func TestDeploymentArchiveMustBeAnUpload(t *testing.T) {
	e := newEnv(t)
	s := e.withUploads(true)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	other := e.createProject(alice, `{"name":"other"}`)

	put := func(key string, size int) {
		if _, err := s.S3.PutObject(t.Context(), s.Bucket, key, bytes.NewReader(make([]byte, size)), int64(size), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	othersKey := upload.Key(other.ID, id.New())
	put(othersKey, 10)
	bigKey := upload.Key(p.ID, id.New())
	put(bigKey, testUploadMax+1)

	for _, tc := range []struct{ name, key, says string }{
		{"missing", upload.Key(p.ID, id.New()), "no upload"},
		{"another project's", othersKey, "must be an object under uploads/" + p.ID.String()},
		{"over the limit", bigKey, fmt.Sprintf("larger than %d bytes", testUploadMax)},
		{"unclean", "uploads/" + p.ID.String() + "/a//b.tar.gz", "no upload"},
	} {
		res := e.do("POST", "/v1/deployments", fmt.Sprintf(`{"project_id":"%s","archive_key":"%s"}`, p.ID, tc.key), bearer(alice)...)
		if res.Code != http.StatusUnprocessableEntity || !strings.Contains(res.body, tc.says) {
			t.Errorf("%s: %d %s; want 422 saying %q", tc.name, res.Code, res.body, tc.says)
		}
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("%d deployments after refusals", n)
	}
	if n := e.count(`SELECT count(*) FROM builds`); n != 0 {
		t.Fatalf("%d builds after refusals", n)
	}
}

// An API without S3 documents the upload routes and answers them 503, to
// members only.
func TestUploadsWithoutS3(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	if res := e.do("POST", "/v1/projects/"+p.ID.String()+"/uploads", "", bearer(alice)...); res.Code != http.StatusServiceUnavailable ||
		!strings.Contains(res.body, "S3_ENDPOINT") {
		t.Fatalf("POST uploads: %d %s", res.Code, res.body)
	}
	if res := e.put(alice, "/v1/projects/"+p.ID.String()+"/uploads/"+id.New().String(), []byte("x"), 1); res.Code != http.StatusServiceUnavailable {
		t.Fatalf("PUT upload: %d %s", res.Code, res.body)
	}
	if res := e.do("POST", "/v1/projects/"+id.New().String()+"/uploads", "", bearer(alice)...); res.Code != http.StatusNotFound {
		t.Fatalf("POST uploads of no project: %d %s", res.Code, res.body)
	}
}

// A streamed upload that stops sending is cut off (408) instead of
// holding its buffer forever, and leaves nothing in S3.
func TestStalledUploadIsCutOff(t *testing.T) {
	e := newEnv(t)
	s := e.withUploads(false)
	e.api.UploadIdle = 200 * time.Millisecond
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	srv := httptest.NewServer(e.handler)
	defer srv.Close()

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("the start of an archive, then nothing")) }()
	req, err := http.NewRequestWithContext(t.Context(), "PUT", srv.URL+"/v1/projects/"+p.ID.String()+"/uploads/"+id.New().String(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+alice.token)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close || !strings.Contains(string(raw), "sent nothing for 200ms") {
		t.Fatalf("stalled upload: %d (close %v) %s", resp.StatusCode, resp.Close, raw)
	}
	if keys := objects(t, s); len(keys) != 0 {
		t.Fatalf("a stalled upload left %v", keys)
	}
}
