package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// Auth is a registry credential. Username and Password for basic auth or
// the registry's token service (GitLab: a deploy token, or
// "gitlab-ci-token" and a job token); IdentityToken alone for registries
// that hand out OAuth2 refresh tokens.
type Auth struct {
	Username      string
	Password      string
	IdentityToken string
}

// String and LogValue keep credentials out of logs and error messages.
func (a Auth) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer.
func (a Auth) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Pull fetches ref through containerd and unpacks it for the configured
// snapshotter, so Create can use it: with user namespaces, into re-owned
// layers only (see remap.go). Pulling an image that is already there only
// checks the registry for the manifest, and not even that when ref names
// it by digest. auth may be nil.
func (r *Runtime) Pull(ctx context.Context, ref string, auth *Auth) error {
	ctx = r.ns(ctx)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("pull %s: %w: %w", ref, ErrInvalidSpec, err)
	}
	if _, pinned := named.(reference.Digested); pinned && r.unpacked(ctx, ref) {
		// A digest names its content: what is here is what the registry
		// would send. Asking it again would only cost a round trip on
		// every instance's start.
		return nil
	}
	opts := []client.RemoteOpt{
		client.WithPullSnapshotter(r.cfg.Snapshotter),
		client.WithResolver(r.resolver(reference.Domain(named), auth)),
	}
	h := r.hardening()
	if !h.userNS {
		opts = append(opts, client.WithPullUnpack)
	}
	img, err := r.client.Pull(ctx, ref, opts...)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, classifyPullError(err))
	}
	if h.userNS {
		if _, err := r.remapImage(ctx, img, r.snapshotter(), h.uidBase); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	return nil
}

// unpacked reports whether image ref is here and ready for Create.
func (r *Runtime) unpacked(ctx context.Context, ref string) bool {
	img, err := r.client.GetImage(ctx, ref)
	if err != nil {
		return false
	}
	if h := r.hardening(); h.userNS {
		return r.remapped(ctx, img, r.snapshotter(), h.uidBase)
	}
	ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter)
	return err == nil && ok
}

// snapshotter is the name of the snapshotter instances' filesystems are
// made by.
func (r *Runtime) snapshotter() string {
	if r.cfg.Snapshotter == "" {
		return defaults.DefaultSnapshotter
	}
	return r.cfg.Snapshotter
}

// resolver speaks HTTPS to every registry but the configured plain-HTTP
// ones, and offers auth to the image's own registry only: a credential for
// our registry must never reach another host.
func (r *Runtime) resolver(host string, auth *Auth) remotes.Resolver {
	plain := func(h string) (bool, error) { return slices.Contains(r.cfg.PlainHTTPRegistries, h), nil }
	opts := []docker.RegistryOpt{docker.WithPlainHTTP(plain), docker.WithClient(r.http)}
	if auth != nil {
		opts = append(opts, docker.WithAuthorizer(docker.NewDockerAuthorizer(
			docker.WithAuthClient(r.http),
			docker.WithAuthCreds(func(h string) (string, string, error) {
				if h != host {
					return "", "", nil
				}
				if auth.IdentityToken != "" {
					return "", auth.IdentityToken, nil
				}
				return auth.Username, auth.Password, nil
			}),
		)))
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(opts...)})
}

func classifyPullError(err error) error {
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case errors.Is(err, ErrRegistryStalled):
		return err
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%w: %w", ErrImageNotFound, err)
	case errors.Is(err, docker.ErrInvalidAuthorization),
		errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return err
}

// RemoveImage deletes an image the node no longer needs (the images of
// retired deployments; nothing else ever removes them). Instances created
// from it keep running and can restart: their filesystems are their own.
// Removing an image that is not there is not an error.
func (r *Runtime) RemoveImage(ctx context.Context, ref string) error {
	err := r.client.ImageService().Delete(r.ns(ctx), ref)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// ErrRegistryStalled: the registry stopped answering in the middle of a
// pull (or never began), for longer than Config.PullStallTimeout.
var ErrRegistryStalled = errors.New("registry stalled")

// registryClient is the HTTP client of every pull. A registry that accepts
// a connection and then says nothing would hold a pull (and whoever waits
// for it) for ever: each request, and each read of a response body, must
// make progress within stall, or the request is abandoned. A slow but
// moving download of a large layer is never cut short.
func registryClient(stall time.Duration) *http.Client {
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: stall, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   stall,
		ResponseHeaderTimeout: stall,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
	return &http.Client{Transport: stallTransport{base: base, stall: stall}}
}

type stallTransport struct {
	base  http.RoundTripper
	stall time.Duration
}

func (t stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	stalled := fmt.Errorf("%w: nothing from %s for %s", ErrRegistryStalled, req.URL.Host, t.stall)
	timer := time.AfterFunc(t.stall, func() { cancel(stalled) })
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		timer.Stop()
		cancel(nil)
		if errors.Is(context.Cause(ctx), ErrRegistryStalled) {
			return nil, stalled
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && req.Context().Err() == nil {
			return nil, fmt.Errorf("%w: %w", ErrRegistryStalled, err)
		}
		return nil, err
	}
	timer.Reset(t.stall)
	resp.Body = &stallBody{ReadCloser: resp.Body, ctx: ctx, timer: timer, stall: t.stall, cancel: cancel}
	return resp, nil
}

// stallBody pushes the deadline back on every read that brings data.
type stallBody struct {
	io.ReadCloser
	ctx    context.Context
	timer  *time.Timer
	stall  time.Duration
	cancel context.CancelCauseFunc
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.stall)
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); errors.Is(cause, ErrRegistryStalled) {
			err = cause
		}
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.ReadCloser.Close()
}
