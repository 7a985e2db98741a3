package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/upload"
)

// Upload methods: how a client sends the archive.
const (
	UploadPost = "POST" // to S3, as a form with the fields
	UploadPut  = "PUT"  // to this API, as the request body
)

// registerUploads mounts the upload routes whether or not S3 is
// configured: without it they answer 503, so that the contract does not
// change with the configuration.
func (a *API) registerUploads(api huma.API) {
	const desc = " Answers 503 when this API has no S3."
	huma.Register(api, huma.Operation{
		OperationID: "create-upload", Method: http.MethodPost, Path: "/v1/projects/{id}/uploads", Tags: []string{"uploads"}, Security: signedIn,
		Summary: "Start an upload", DefaultStatus: http.StatusCreated,
		Description: "Hands out a place for a .tar.gz of the project's source, at `key` under `uploads/<project_id>/`. " +
			"`method` says how to send it. `POST`: straight to S3, as a multipart/form-data POST to `url` of every field of `fields` " +
			"and then the archive as the field `file`, before `expires_at`; S3 itself refuses another key and an archive over `max_bytes`. " +
			"`PUT`: S3 is out of clients' reach, so stream the archive as the body of a PUT to `url`, a path of this API, " +
			"with the same credentials. Either way, then deploy it with POST /v1/deployments and `archive_key` = `key`. " +
			"Uploads are deleted after a while (UPLOAD_KEEP, a day by default)." + desc,
	}, a.createUpload)
	huma.Register(api, huma.Operation{
		OperationID: "put-upload", Method: http.MethodPut, Path: "/v1/projects/{id}/uploads/{upload_id}", Tags: []string{"uploads"}, Security: signedIn,
		Summary: "Stream an upload", DefaultStatus: http.StatusCreated,
		Description: "Stores the request body, a .tar.gz of at most the `max_bytes` POST /v1/projects/{id}/uploads gave, at " +
			"`uploads/<project_id>/<upload_id>.tar.gz`. A body over the limit is refused with 413, one that stalls (a minute without a byte) " +
			"with 408, and nothing is stored." + desc,
		RequestBody: &huma.RequestBody{
			Required:    true,
			Description: "The archive: a gzip-compressed tar of the source tree.",
			Content:     map[string]*huma.MediaType{"application/gzip": {Schema: &huma.Schema{Type: huma.TypeString, Format: "binary"}}},
		},
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusRequestTimeout, http.StatusRequestEntityTooLarge,
			http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}, a.putUpload)
}

// Upload is where and how to send an archive.
type Upload struct {
	ID        uuid.UUID         `json:"id" format:"uuid"`
	Key       string            `json:"key" doc:"the object key: archive_key of POST /v1/deployments once the archive is sent"`
	MaxBytes  int64             `json:"max_bytes" doc:"the largest archive accepted"`
	Method    string            `json:"method" enum:"POST,PUT" doc:"POST: a form to S3 at url; PUT: the archive as the body of a PUT to url, on this API"`
	URL       string            `json:"url" doc:"POST: S3's absolute URL; PUT: a path of this API"`
	Fields    map[string]string `json:"fields,omitempty" doc:"POST only: the form fields to send, in any order, before the file"`
	ExpiresAt *time.Time        `json:"expires_at" doc:"POST only: S3 accepts the upload until then; null for PUT"`
}

type uploadOutput struct{ Body Upload }

// uploads is the store, or the 503 of an API without S3.
func (a *API) uploads() (*upload.Store, error) {
	if a.Uploads == nil {
		return nil, huma.Error503ServiceUnavailable("uploads are not configured on this API (no S3_ENDPOINT)")
	}
	return a.Uploads, nil
}

// memberProject is the path's project when the caller is a member of it.
func (a *API) memberProject(ctx context.Context, rawID string) (uuid.UUID, error) {
	pid, err := projectID(rawID)
	if err != nil {
		return uuid.Nil, err
	}
	p, err := a.Projects.Get(ctx, principal(ctx).UserID, pid)
	if err != nil {
		return uuid.Nil, problem(err)
	}
	return p.ID, nil
}

func (a *API) createUpload(ctx context.Context, in *idInput) (*uploadOutput, error) {
	pid, err := a.memberProject(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	store, err := a.uploads()
	if err != nil {
		return nil, err
	}
	if !store.Direct() {
		up := id.New()
		return &uploadOutput{Body: Upload{
			ID: up, Key: upload.Key(pid, up), MaxBytes: store.MaxBytes, Method: UploadPut,
			URL: fmt.Sprintf("/v1/projects/%s/uploads/%s", pid, up),
		}}, nil
	}
	p, err := store.Presign(ctx, pid)
	if err != nil {
		return nil, err
	}
	return &uploadOutput{Body: Upload{
		ID: p.ID, Key: p.Key, MaxBytes: store.MaxBytes, Method: UploadPost,
		URL: p.URL, Fields: p.Fields, ExpiresAt: &p.ExpiresAt,
	}}, nil
}

// putUploadInput takes the request body as a stream: huma would read it
// whole into memory first.
type putUploadInput struct {
	ID       string `path:"id"`
	UploadID string `path:"upload_id" format:"uuid" doc:"the id POST /v1/projects/{id}/uploads gave"`

	body io.Reader
	size int64 // -1: unknown
	rc   *http.ResponseController
}

func (in *putUploadInput) Resolve(ctx huma.Context) []error {
	r, w := humago.Unwrap(ctx)
	in.body, in.size, in.rc = r.Body, r.ContentLength, http.NewResponseController(w)
	return nil
}

// StoredUpload is an archive stored through the API.
type StoredUpload struct {
	ID   uuid.UUID `json:"id" format:"uuid"`
	Key  string    `json:"key" doc:"archive_key of POST /v1/deployments"`
	Size int64     `json:"size" doc:"bytes stored"`
}

type storedUploadOutput struct{ Body StoredUpload }

func (a *API) putUpload(ctx context.Context, in *putUploadInput) (*storedUploadOutput, error) {
	pid, err := a.memberProject(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	store, err := a.uploads()
	if err != nil {
		return nil, err
	}
	up, err := uuid.Parse(in.UploadID)
	if err != nil {
		return nil, huma.Error422UnprocessableEntity("upload_id is not a UUID")
	}
	idle := a.UploadIdle
	if idle <= 0 {
		idle = time.Minute
	}
	// A deadline per read rather than for the whole body: a slow link
	// may take long, a stalled one holds a part's buffer for nothing.
	body := &readErr{r: in.body, before: func() { _ = in.rc.SetReadDeadline(time.Now().Add(idle)) }}
	o, err := store.Put(ctx, pid, up, body, in.size)
	// The rest of the body is not read: the connection cannot carry
	// another request after these.
	closing := http.Header{"Connection": {"close"}}
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, upload.ErrTooLarge):
		return nil, huma.ErrorWithHeaders(
			huma.NewError(http.StatusRequestEntityTooLarge, fmt.Sprintf("the archive is larger than %d bytes", store.MaxBytes)), closing)
	case err != nil && errors.As(body.err, &timeout) && timeout.Timeout():
		return nil, huma.ErrorWithHeaders(
			huma.NewError(http.StatusRequestTimeout, fmt.Sprintf("the upload sent nothing for %s", idle)), closing)
	case err != nil && body.err != nil:
		return nil, huma.Error400BadRequest("the body could not be read", body.err)
	}
	if err != nil {
		return nil, err
	}
	return &storedUploadOutput{Body: StoredUpload{ID: up, Key: o.Key, Size: o.Size}}, nil
}

// readErr remembers why the body could not be read, to tell the client's
// fault (a broken or cut-off body) from S3's.
type readErr struct {
	r      io.Reader
	before func() // before each read
	err    error
}

func (r *readErr) Read(p []byte) (int, error) {
	r.before()
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// archiveProblem renders why an archive_key cannot be deployed.
func (a *API) archiveProblem(err error) error {
	switch {
	case errors.Is(err, upload.ErrNotFound):
		return huma.Error422UnprocessableEntity("archive_key names no upload: send the archive first (POST /v1/projects/{id}/uploads)")
	case errors.Is(err, upload.ErrTooLarge):
		return huma.Error422UnprocessableEntity(fmt.Sprintf("the archive is larger than %d bytes", a.Uploads.MaxBytes))
	case errors.Is(err, upload.ErrForeign):
		return huma.Error422UnprocessableEntity("archive_key is not an upload of this project")
	}
	return err
}
