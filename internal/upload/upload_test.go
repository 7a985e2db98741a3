package upload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
)

const testMax = 64 << 10

func newStore(t *testing.T) *upload.Store {
	t.Helper()
	mc, cfg := testenv.Bucket(t, "upload")
	return &upload.Store{S3: mc, Presigner: mc, Bucket: cfg.Bucket, MaxBytes: testMax, Expiry: time.Minute}
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// keys lists every object in the store's bucket, and every multipart
// upload left unfinished.
func keys(t *testing.T, s *upload.Store) (objects, incomplete []string) {
	t.Helper()
	for o := range s.S3.ListObjects(t.Context(), s.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		objects = append(objects, o.Key)
	}
	for u := range s.S3.ListIncompleteUploads(t.Context(), s.Bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		incomplete = append(incomplete, u.Key)
	}
	return objects, incomplete
}

func content(t *testing.T, s *upload.Store, key string) []byte {
	t.Helper()
	obj, err := s.S3.GetObject(t.Context(), s.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

// A presigned POST stores the archive at the key it was issued for, and
// MinIO itself refuses an archive over the limit, an empty one, another
// key, and any upload after the policy expired.
func TestPresignedPost(t *testing.T) {
	s := newStore(t)
	project := id.New()
	hc := &http.Client{Timeout: time.Minute}

	p, err := s.Presign(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	if want := "uploads/" + project.String() + "/" + p.ID.String() + ".tar.gz"; p.Key != want || p.Key != upload.Key(project, p.ID) {
		t.Fatalf("key = %q, want %q", p.Key, want)
	}
	if d := time.Until(p.ExpiresAt); d <= 0 || d > time.Minute {
		t.Fatalf("expires in %v, want within a minute", d)
	}

	big := random(t, testMax+1)
	if err := upload.Post(t.Context(), hc, p.URL, p.Fields, bytes.NewReader(big), int64(len(big))); err == nil || !strings.Contains(err.Error(), "EntityTooLarge") {
		t.Fatalf("over the limit: err = %v, want EntityTooLarge", err)
	}
	if err := upload.Post(t.Context(), hc, p.URL, p.Fields, bytes.NewReader(nil), 0); err == nil || !strings.Contains(err.Error(), "EntityTooSmall") {
		t.Fatalf("empty: err = %v, want EntityTooSmall", err)
	}
	other := map[string]string{}
	for k, v := range p.Fields {
		other[k] = v
	}
	other["key"] = upload.Key(id.New(), p.ID) // another project's prefix
	if err := upload.Post(t.Context(), hc, p.URL, other, strings.NewReader("x"), 1); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("another key: err = %v, want AccessDenied", err)
	}
	if objs, _ := keys(t, s); len(objs) != 0 {
		t.Fatalf("refused uploads left %v", objs)
	}

	exact := random(t, testMax)
	if err := upload.Post(t.Context(), hc, p.URL, p.Fields, bytes.NewReader(exact), int64(len(exact))); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if got := content(t, s, p.Key); !bytes.Equal(got, exact) {
		t.Fatalf("stored %d bytes, not the %d sent", len(got), len(exact))
	}
	if o, err := s.Check(t.Context(), project, p.Key); err != nil || o.Size != testMax {
		t.Fatalf("Check = %+v, %v", o, err)
	}

	expired := *s
	expired.Expiry = -time.Minute
	q, err := expired.Presign(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	if err := upload.Post(t.Context(), hc, q.URL, q.Fields, strings.NewReader("x"), 1); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("expired policy: err = %v, want AccessDenied", err)
	}
}

// Put streams an archive of known or unknown length; one over the limit
// is ErrTooLarge and leaves neither an object nor a multipart upload.
func TestPut(t *testing.T) {
	s := newStore(t)
	project := id.New()

	for _, size := range []int64{testMax, -1} {
		data := random(t, testMax)
		up := id.New()
		o, err := s.Put(t.Context(), project, up, iotest.HalfReader(bytes.NewReader(data)), size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if o.Key != upload.Key(project, up) || o.Size != testMax {
			t.Fatalf("size %d: stored %+v", size, o)
		}
		if got := content(t, s, o.Key); !bytes.Equal(got, data) {
			t.Fatalf("size %d: content differs", size)
		}
	}
	before, _ := keys(t, s)

	for _, tc := range []struct {
		name string
		r    io.Reader
		size int64
	}{
		{"declared over", bytes.NewReader(random(t, testMax+1)), testMax + 1},
		{"unknown length over", bytes.NewReader(random(t, testMax+1)), -1},
		// Several parts' worth: the multipart upload started must be aborted.
		{"many parts over", io.LimitReader(zeros{}, 12<<20), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			big := *s
			if tc.name == "many parts over" {
				big.MaxBytes = 8 << 20 // a part sent, the next one over
			}
			r := &counting{r: tc.r}
			_, err := big.Put(t.Context(), project, id.New(), r, tc.size)
			if !errors.Is(err, upload.ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			// minio-go reads a whole part before sending it: past the
			// limit, at least one part was sent and must be aborted.
			if tc.name == "many parts over" && r.n <= 5<<20 {
				t.Fatalf("read only %d bytes: no part was sent", r.n)
			}
			objs, incomplete := keys(t, s)
			if !slices.Equal(objs, before) || len(incomplete) != 0 {
				t.Fatalf("left behind: objects %v (before %v), incomplete uploads %v", objs, before, incomplete)
			}
		})
	}
}

type counting struct {
	r io.Reader
	n int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Check admits only a stored archive under the project's own prefix, at
// most the limit.
func TestCheck(t *testing.T) {
	s := newStore(t)
	project := id.New()
	o, err := s.Put(t.Context(), project, id.New(), strings.NewReader("archive"), 7)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Check(t.Context(), project, o.Key); err != nil || got != o {
		t.Fatalf("Check(%s) = %+v, %v", o.Key, got, err)
	}
	if _, err := s.Check(t.Context(), id.New(), o.Key); !errors.Is(err, upload.ErrForeign) {
		t.Errorf("another project's key: %v, want ErrForeign", err)
	}
	for _, key := range []string{
		upload.Key(project, id.New()),
		upload.Prefix(project) + "a/../b.tar.gz",
		upload.Prefix(project) + "a//b.tar.gz",
	} {
		if _, err := s.Check(t.Context(), project, key); !errors.Is(err, upload.ErrNotFound) {
			t.Errorf("Check(%s) = %v, want ErrNotFound", key, err)
		}
	}
	for _, key := range []string{"", upload.Prefix(project), "uploads/" + project.String(), "other/" + project.String() + "/x.tar.gz"} {
		if _, err := s.Check(t.Context(), project, key); !errors.Is(err, upload.ErrForeign) {
			t.Errorf("Check(%q) = %v, want ErrForeign", key, err)
		}
	}
	// An object over the limit (the limit was lowered since, or it was
	// put there by other means) is refused.
	small := *s
	small.MaxBytes = 6
	if _, err := small.Check(t.Context(), project, o.Key); !errors.Is(err, upload.ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
}

// Prune deletes the uploads stored before the cutoff and the unfinished
// ones started before it, and nothing outside uploads/.
func TestPrune(t *testing.T) {
	s := newStore(t)
	put := func(key string) {
		if _, err := s.S3.PutObject(t.Context(), s.Bucket, key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	project := id.New()
	var old []string
	for range 3 {
		o, err := s.Put(t.Context(), project, id.New(), strings.NewReader("x"), 1)
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, o.Key)
	}
	put("registry/blob") // not an upload
	// A stream the API never finished (it crashed): its part stays.
	core := minio.Core{Client: s.S3}
	unfinished := upload.Key(project, id.New())
	uid, err := core.NewMultipartUpload(t.Context(), s.Bucket, unfinished, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.PutObjectPart(t.Context(), s.Bucket, unfinished, uid, 1, strings.NewReader("part"), 4, minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, incomplete := keys(t, s); !slices.Equal(incomplete, []string{unfinished}) {
		t.Fatalf("unfinished uploads: %v, want [%s]", incomplete, unfinished)
	}

	// MinIO's clock stamps LastModified; a cutoff an hour away from now
	// on either side needs no agreement to the second.
	if n, err := s.Prune(t.Context(), time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("Prune(an hour ago) = %d, %v; want nothing deleted", n, err)
	}
	if n, err := s.Prune(t.Context(), time.Now().Add(time.Hour)); err != nil || n != len(old)+1 {
		t.Fatalf("Prune(in an hour) = %d, %v; want %d", n, err, len(old)+1)
	}
	if objs, incomplete := keys(t, s); !slices.Equal(objs, []string{"registry/blob"}) || len(incomplete) != 0 {
		t.Fatalf("left after pruning: %v, unfinished %v", objs, incomplete)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Prune(ctx, time.Now()); err == nil {
		t.Fatalf("Prune with a cancelled context: no error")
	}
}
