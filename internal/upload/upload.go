// Package upload keeps the archives `zeitwork deploy ./dir` sends: one
// object per upload at uploads/<project-id>/<upload-id>.tar.gz in the
// platform's bucket, where the builder fetches it.
//
// # Two ways in
//
// A client that can reach S3 uploads there directly with a presigned POST
// (Presign): the policy fixes the key and the content-length range, so S3
// itself refuses another key or an archive over the limit, and the bytes
// never pass through the API. A client that cannot (S3 on a private
// network) streams the archive through the API instead (Put), which
// enforces the same limit while copying and leaves nothing behind when the
// copy fails.
//
// # Why a prefix per project
//
// A build runs with its project's variables and registry credentials, so
// it may only build an archive of its own project: the key's prefix is the
// proof, and Check is the only way a key becomes a deployment's source.
//
// # Old uploads
//
// An upload is read once, when its build starts; Prune deletes those older
// than a cutoff, and the parts of streams that never finished. A prune rather than a bucket lifecycle rule: the bucket
// is shared with other parts of the platform, whose lifecycle
// configuration a rule set here would replace, and lifecycle expiry counts
// in whole days.
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/id"
)

// Root is the prefix every upload is under.
const Root = "uploads/"

var (
	// ErrNotFound: no upload has that key.
	ErrNotFound = errors.New("no such upload")
	// ErrTooLarge: the archive is over the store's MaxBytes.
	ErrTooLarge = errors.New("upload too large")
	// ErrForeign: the key is not under the project's own prefix.
	ErrForeign = errors.New("upload of another project")
)

// partSize is what a streamed upload of unknown length buffers before
// sending a part: minio-go's default is sized for 5 TiB objects, and each
// stream in flight holds one. S3's smallest part still keeps a 512 MiB
// archive far below its 10,000 parts.
const partSize = 5 << 20

// Store is the uploads in one bucket.
type Store struct {
	// S3 reaches the bucket from the API.
	S3     *minio.Client
	Bucket string
	// Presigner signs direct uploads for the endpoint clients reach S3 at,
	// which may differ from S3's (a public name for an internal endpoint);
	// nil when clients cannot reach S3 and stream through the API.
	Presigner *minio.Client
	// MaxBytes bounds an archive.
	MaxBytes int64
	// Expiry is how long a presigned upload may be used.
	Expiry time.Duration
}

// Prefix is where project's uploads are.
func Prefix(project uuid.UUID) string { return Root + project.String() + "/" }

// Key is the object key of an upload.
func Key(project, upload uuid.UUID) string { return Prefix(project) + upload.String() + ".tar.gz" }

// Presigned is a direct upload to S3: a multipart/form-data POST to URL
// with Fields, then the archive as the field "file".
type Presigned struct {
	ID        uuid.UUID
	Key       string
	URL       string
	Fields    map[string]string
	ExpiresAt time.Time
}

// Direct says whether clients upload to S3 themselves.
func (s *Store) Direct() bool { return s.Presigner != nil }

// Presign hands out a new upload of project: S3 accepts exactly one key,
// 1 to MaxBytes bytes, until ExpiresAt.
func (s *Store) Presign(ctx context.Context, project uuid.UUID) (Presigned, error) {
	if s.Presigner == nil {
		return Presigned{}, errors.New("upload: no presigner: clients stream through the API")
	}
	out := Presigned{ID: id.New(), ExpiresAt: time.Now().Add(s.Expiry).UTC().Truncate(time.Second)}
	out.Key = Key(project, out.ID)
	p := minio.NewPostPolicy()
	for _, err := range []error{
		p.SetBucket(s.Bucket), p.SetKey(out.Key), p.SetExpires(out.ExpiresAt),
		p.SetContentLengthRange(1, s.MaxBytes),
	} {
		if err != nil {
			return Presigned{}, fmt.Errorf("upload: post policy: %w", err)
		}
	}
	u, fields, err := s.Presigner.PresignedPostPolicy(ctx, p)
	if err != nil {
		return Presigned{}, fmt.Errorf("upload: presign %s: %w", out.Key, err)
	}
	out.URL, out.Fields = u.String(), fields
	return out, nil
}

// Object is a stored upload.
type Object struct {
	Key  string
	Size int64
}

// Put stores the archive read from r as upload of project. size is its
// length, or -1 when unknown. An archive over MaxBytes is ErrTooLarge, and
// then, as on any failure, nothing is stored (a multipart upload is
// aborted).
func (s *Store) Put(ctx context.Context, project, upload uuid.UUID, r io.Reader, size int64) (Object, error) {
	key := Key(project, upload)
	if size > s.MaxBytes {
		return Object{}, fmt.Errorf("upload: %s: %w: %d bytes, at most %d", key, ErrTooLarge, size, s.MaxBytes)
	}
	lr := &limitReader{r: r, left: s.MaxBytes}
	info, err := s.S3.PutObject(ctx, s.Bucket, key, lr, size, minio.PutObjectOptions{
		ContentType: "application/gzip", PartSize: partSize,
	})
	if lr.over {
		return Object{}, fmt.Errorf("upload: %s: %w: over %d bytes", key, ErrTooLarge, s.MaxBytes)
	}
	if err != nil {
		return Object{}, fmt.Errorf("upload: put %s: %w", key, err)
	}
	return Object{Key: key, Size: info.Size}, nil
}

// limitReader fails a read past left bytes instead of ending the stream
// there, so an archive over the limit is refused, never stored truncated.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte more shows whether the stream goes on
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	return n, err
}

// Check says whether key is an upload project may build: under the
// project's own prefix (ErrForeign), stored (ErrNotFound) and at most
// MaxBytes (ErrTooLarge).
func (s *Store) Check(ctx context.Context, project uuid.UUID, key string) (Object, error) {
	rest, ok := strings.CutPrefix(key, Prefix(project))
	if !ok || rest == "" {
		return Object{}, fmt.Errorf("upload: %s: %w", key, ErrForeign)
	}
	// No upload is ever stored at an unclean key, and S3 refuses to look.
	if path.Clean(key) != key || strings.Contains(key, "..") {
		return Object{}, fmt.Errorf("upload: %s: %w", key, ErrNotFound)
	}
	info, err := s.S3.StatObject(ctx, s.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchBucket" {
			return Object{}, fmt.Errorf("upload: %s: %w", key, ErrNotFound)
		}
		return Object{}, fmt.Errorf("upload: stat %s: %w", key, err)
	}
	if info.Size > s.MaxBytes {
		return Object{}, fmt.Errorf("upload: %s: %w: %d bytes, at most %d", key, ErrTooLarge, info.Size, s.MaxBytes)
	}
	return Object{Key: key, Size: info.Size}, nil
}

// Prune deletes the uploads stored before cutoff, and aborts the multipart
// uploads started before it and never finished, and returns how many. Any
// number of API processes may prune at once: a delete is idempotent.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing when a delete fails
	old := make(chan minio.ObjectInfo)
	listErr := make(chan error, 1)
	go func() {
		defer close(old)
		for obj := range s.S3.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: Root, Recursive: true}) {
			if obj.Err != nil {
				listErr <- obj.Err
				return
			}
			if obj.LastModified.Before(before) {
				select {
				case old <- obj:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	var (
		n      int
		failed error
	)
	for r := range s.S3.RemoveObjectsWithResult(ctx, s.Bucket, old, minio.RemoveObjectsOptions{}) {
		if r.Err != nil {
			if failed == nil {
				failed = fmt.Errorf("upload: delete %s: %w", r.ObjectName, r.Err)
			}
			continue
		}
		n++
	}
	select {
	case err := <-listErr:
		return n, errors.Join(fmt.Errorf("upload: list %s: %w", Root, err), failed)
	default:
	}
	// A stream cut off by a crash leaves its multipart upload's parts,
	// which S3 keeps (and bills) until they are aborted. Listed from the
	// bucket's root: MinIO lists under a prefix only an object's own.
	for u := range s.S3.ListIncompleteUploads(ctx, s.Bucket, "", true) {
		if u.Err != nil {
			return n, errors.Join(fmt.Errorf("upload: list unfinished uploads: %w", u.Err), failed)
		}
		if !strings.HasPrefix(u.Key, Root) || !u.Initiated.Before(before) {
			continue
		}
		if err := s.S3.RemoveIncompleteUpload(ctx, s.Bucket, u.Key); err != nil {
			return n, errors.Join(fmt.Errorf("upload: abort unfinished %s: %w", u.Key, err), failed)
		}
		n++
	}
	return n, failed
}
