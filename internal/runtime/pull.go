package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
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
// snapshotter, so Create can use it. Pulling an image that is already
// there only checks the registry for the manifest. auth may be nil.
func (r *Runtime) Pull(ctx context.Context, ref string, auth *Auth) error {
	ctx = r.ns(ctx)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("pull %s: %w: %w", ref, ErrInvalidSpec, err)
	}
	host := reference.Domain(named)
	_, err = r.client.Pull(ctx, ref,
		client.WithPullUnpack,
		client.WithPullSnapshotter(r.cfg.Snapshotter),
		client.WithResolver(r.resolver(host, auth)),
	)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, classifyPullError(err))
	}
	return nil
}

// resolver speaks HTTPS to every registry but the configured plain-HTTP
// ones, and offers auth to the image's own registry only: a credential for
// our registry must never reach another host.
func (r *Runtime) resolver(host string, auth *Auth) remotes.Resolver {
	plain := func(h string) (bool, error) { return slices.Contains(r.cfg.PlainHTTPRegistries, h), nil }
	opts := []docker.RegistryOpt{docker.WithPlainHTTP(plain)}
	if auth != nil {
		opts = append(opts, docker.WithAuthorizer(docker.NewDockerAuthorizer(
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
