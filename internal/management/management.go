// Package management is the transport of the management API that operators
// serve: images, instances, nodes, projects' domains and the registry's
// token endpoint. It owns no state and no decision: it parses requests,
// calls the domain packages (image, builder, instance, node, domains, and
// the operator through the Cluster interface), and renders JSON through
// internal/httpapi. Every route but the registry's and the nodes' own
// (/v1/node/…, each node's credential) requires the management token
// (MANAGEMENT_TOKEN), which no node or edge holds.
package management

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/samber/lo"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/image"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// API is the management API.
type API struct {
	Pool   *pgxpool.Pool
	Queue  *queue.Queue
	Images image.Store
	Token  string
	Log    *slog.Logger
	// Cluster, when set, serves the instance and node routes.
	Cluster Cluster
	// Domains, when set, serves projects' custom domain routes.
	Domains *domains.Service
	// RegistryTokens, when set, serves the registry's token endpoint
	// (GET /v1/registry/token, Basic credentials instead of the token).
	RegistryTokens *registryauth.Service
	// Secrets, when set, serves nodes their instances' environments
	// (GET /v1/node/instances/{id}/environment, the node's own
	// credential instead of the token): the keys stay on the control plane.
	Secrets *secret.Ring
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	s := httpapi.Server{Log: a.Log}
	mux := http.NewServeMux()
	route := func(pattern string, h httpapi.HandlerFunc) {
		mux.Handle(pattern, s.RequireToken(a.Token, s.Handle(h)))
	}
	route("GET /v1/images", a.listImages)
	route("POST /v1/images", a.buildImage)
	route("GET /v1/images/{id}", a.getImage)
	route("GET /v1/images/{id}/download", a.downloadImage)
	route("DELETE /v1/images/{id}", a.deleteImage)
	if a.Cluster != nil {
		route("GET /v1/instances", a.listInstances)
		route("POST /v1/instances", a.createInstance)
		route("GET /v1/instances/{id}", a.getInstance)
		route("PUT /v1/instances/{id}/state", a.setInstanceState)
		route("DELETE /v1/instances/{id}", a.deleteInstance)
		route("GET /v1/nodes", a.listNodes)
		route("POST /v1/nodes/{id}/drain", a.setNodeStatus(node.StatusDraining))
		route("POST /v1/nodes/{id}/undrain", a.setNodeStatus(node.StatusActive))
	}
	if a.Domains != nil {
		route("GET /v1/projects/{id}/domains", a.listDomains)
		route("POST /v1/projects/{id}/domains", a.addDomain)
		route("GET /v1/projects/{id}/domains/{domainID}", a.getDomain)
		route("POST /v1/projects/{id}/domains/{domainID}/verify", a.verifyDomain)
		route("DELETE /v1/projects/{id}/domains/{domainID}", a.removeDomain)
	}
	if a.RegistryTokens != nil {
		mux.Handle("GET /v1/registry/token", a.RegistryTokens.Handler(s))
		mux.Handle("POST /v1/node/registry-credential", a.requireNode(s, a.registryCredential))
	}
	if a.Secrets != nil {
		mux.Handle("GET /v1/node/instances/{id}/environment", a.requireNode(s, a.instanceEnvironment))
	}
	return s.Router(mux)
}

// Image is an image as the API shows it.
type Image struct {
	ID         uuid.UUID  `json:"id"`
	ProjectID  uuid.UUID  `json:"project_id"`
	BuildID    *uuid.UUID `json:"build_id"`
	Repository string     `json:"repository"`
	Tag        string     `json:"tag"`
	Digest     string     `json:"digest"`
	Reference  string     `json:"reference"` // repository@digest: what to pull
	SizeBytes  *int64     `json:"size_bytes"`
	CreatedAt  time.Time  `json:"created_at"`
}

func imageJSON(i db.Image) Image {
	return Image{
		ID: i.ID, ProjectID: i.ProjectID, BuildID: i.BuildID, Repository: i.Repository, Tag: i.Tag,
		Digest: i.Digest, Reference: i.Repository + "@" + i.Digest, SizeBytes: i.SizeBytes, CreatedAt: i.CreatedAt,
	}
}

func pathID(r *http.Request) (uuid.UUID, error) {
	u, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return uuid.Nil, httpapi.BadRequest("%q is not an id", r.PathValue("id"))
	}
	return u, nil
}

func (a *API) listImages(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := image.ListOptions{Limit: 50}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return httpapi.BadRequest("limit must be a number from 1 to 500")
		}
		opts.Limit = n
	}
	if v := q.Get("project_id"); v != "" {
		p, err := uuid.Parse(v)
		if err != nil {
			return httpapi.BadRequest("project_id is not an id")
		}
		opts.ProjectID = &p
	}
	if v := q.Get("before"); v != "" {
		b, err := uuid.Parse(v)
		if err != nil {
			return httpapi.BadRequest("before is not an id")
		}
		opts.Before = b
	}
	rows, err := a.Images.List(r.Context(), opts)
	if err != nil {
		return err
	}
	out := struct {
		Images []Image    `json:"images"`
		Next   *uuid.UUID `json:"next"` // pass as ?before= for the next page
	}{Images: lo.Map(rows, func(row db.Image, _ int) Image { return imageJSON(row) })}
	if len(rows) == opts.Limit {
		out.Next = &rows[len(rows)-1].ID
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getImage(w http.ResponseWriter, r *http.Request) error {
	imageID, err := pathID(r)
	if err != nil {
		return err
	}
	img, err := a.Images.Get(r.Context(), imageID)
	if errors.Is(err, image.ErrNotFound) {
		return httpapi.NotFound("image %s not found", imageID)
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, imageJSON(img))
	return nil
}

func (a *API) downloadImage(w http.ResponseWriter, r *http.Request) error {
	imageID, err := pathID(r)
	if err != nil {
		return err
	}
	img, err := a.Images.Get(r.Context(), imageID)
	if errors.Is(err, image.ErrNotFound) {
		return httpapi.NotFound("image %s not found", imageID)
	}
	if err != nil {
		return err
	}
	// Headers go out with the first byte; an error after that can only cut
	// the stream short, which a tar reader notices.
	pw := &lazyHeaders{w: w, set: func() {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.oci.tar"`, img.ID))
	}}
	if err := a.Images.Download(r.Context(), imageID, pw); err != nil {
		if !pw.started {
			return httpapi.Unavailable("could not read image %s from the registry", imageID).With(err)
		}
		a.Log.ErrorContext(r.Context(), "image download cut short", "image_id", imageID, "err", err)
		panic(http.ErrAbortHandler) // abort the response so the client sees a broken transfer
	}
	return nil
}

type lazyHeaders struct {
	w       http.ResponseWriter
	set     func()
	started bool
}

func (l *lazyHeaders) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.set()
	}
	return l.w.Write(p)
}

var _ io.Writer = (*lazyHeaders)(nil)

func (a *API) deleteImage(w http.ResponseWriter, r *http.Request) error {
	imageID, err := pathID(r)
	if err != nil {
		return err
	}
	switch err := a.Images.Delete(r.Context(), imageID); {
	case errors.Is(err, image.ErrNotFound):
		return httpapi.NotFound("image %s not found", imageID)
	case errors.Is(err, image.ErrInUse):
		return httpapi.Conflict("image %s is still used by a deployment or an instance", imageID)
	case err != nil:
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// BuildRequest is the body of POST /v1/images.
type BuildRequest struct {
	ProjectID  uuid.UUID `json:"project_id"`
	CommitSHA  string    `json:"commit_sha,omitempty"`
	Ref        string    `json:"ref,omitempty"`
	ArchiveKey string    `json:"archive_key,omitempty"`
}

// BuildAccepted is the answer to POST /v1/images: the image appears when
// the build succeeds.
type BuildAccepted struct {
	DeploymentID uuid.UUID `json:"deployment_id"`
	BuildID      uuid.UUID `json:"build_id"`
	Status       string    `json:"status"`
}

func (a *API) buildImage(w http.ResponseWriter, r *http.Request) error {
	var req BuildRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.ProjectID == uuid.Nil {
		return httpapi.BadRequest("project_id is required")
	}
	res, err := build.Request(r.Context(), a.Pool, a.Queue, req.ProjectID,
		build.Source{CommitSHA: req.CommitSHA, Ref: req.Ref, ArchiveKey: req.ArchiveKey}, nil)
	switch {
	case errors.Is(err, build.ErrProjectNotFound):
		return httpapi.NotFound("project %s not found", req.ProjectID)
	case errors.Is(err, build.ErrInvalidSource):
		return httpapi.Invalid("%s", err)
	case err != nil:
		return err
	}
	httpapi.WriteJSON(w, http.StatusAccepted, BuildAccepted{DeploymentID: res.Deployment.ID, BuildID: res.Build.ID, Status: string(res.Build.Status)})
	return nil
}
