package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bk "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Registry is where images and build cache go, and the credentials for it.
// The credentials handed to a build are scoped to one project's repository
// (production: a short-lived registry token for that repository only), so
// a build can neither read nor overwrite another project's images.
type Registry struct {
	Host     string // e.g. registry.zeitwork.internal or 127.0.0.1:25000
	Insecure bool   // plain HTTP (local development only)
	Username string
	Password string
}

func (r Registry) authConfig() types.AuthConfig {
	return types.AuthConfig{ServerAddress: r.Host, Username: r.Username, Password: r.Password}
}

// Request is one image build.
type Request struct {
	ContextDir string // the unpacked source, at the project's root directory
	Dockerfile []byte // the repository's own or a generated one
	// DockerIgnore, when set, applies instead of the context's own
	// .dockerignore (used with generated Dockerfiles).
	DockerIgnore []byte
	Repository   string // within the registry: the project id
	Tag          string // the deployment id
	Registry     Registry
}

// Image is what a successful build pushed.
type Image struct {
	Repository string // host/repository
	Tag        string
	Digest     string // sha256:...
	Size       int64  // manifest + config + compressed layers, as stored
}

// Ref is the image's full reference by tag.
func (i Image) Ref() string { return i.Repository + ":" + i.Tag }

// ErrBuild wraps failures of the build itself (the user's Dockerfile, a
// failing RUN, a missing base image), as opposed to infrastructure failures.
var ErrBuild = errors.New("build failed")

// BuildKit runs builds on one buildkitd.
type BuildKit struct {
	Addr string // unix:///run/buildkit/buildkitd.sock or tcp://...
	// AllowHostNetwork lets builds run on a buildkitd whose RUN steps share
	// the host's network (local development only). By default a build
	// refuses such a buildkitd: a RUN step there reaches whatever the host
	// reaches (Postgres, the registry, the control plane), so the daemon
	// must give RUN steps a network namespace of their own (its CNI
	// network, policed by the build host's nftables table).
	AllowHostNetwork bool
}

// networkLabel is the label buildkitd's workers report their RUN network
// mode in ("cni" or "host").
const networkLabel = "org.mobyproject.buildkit.worker.network"

// checkNetwork refuses workers whose RUN steps would share the host's
// network, unless that is allowed. A worker that does not say counts as
// host: the check fails closed.
func (b BuildKit) checkNetwork(workers []*bk.WorkerInfo) error {
	if b.AllowHostNetwork {
		return nil
	}
	if len(workers) == 0 {
		return fmt.Errorf("buildkitd at %s has no workers", b.Addr)
	}
	for _, w := range workers {
		if mode := w.Labels[networkLabel]; mode != "cni" {
			if mode == "" {
				mode = "not reported"
			}
			return fmt.Errorf("buildkitd at %s gives RUN steps the host's network (worker %s, network %s): "+
				"refusing to build; start it with its CNI network (scripts/deps.sh, zeitwork bootstrap) or set BUILD_NETWORK=host (local development only)", b.Addr, w.ID, mode)
		}
	}
	return nil
}

// Build runs req and pushes the image; progress receives BuildKit's plain
// text output as the build goes. Nothing is returned unless the push
// finished, so a failed build never yields an image to record.
func (b BuildKit) Build(ctx context.Context, req Request, progress io.Writer) (Image, error) {
	c, err := bk.New(ctx, b.Addr)
	if err != nil {
		return Image{}, fmt.Errorf("connect to buildkitd: %w", err)
	}
	defer c.Close()
	// Dialling is lazy: ask for the workers so an unreachable buildkitd is
	// reported as what it is, an infrastructure failure worth a retry.
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("buildkitd at %s unreachable: %w", b.Addr, err)
	}
	if err := b.checkNetwork(workers); err != nil {
		return Image{}, err
	}

	dfDir, err := os.MkdirTemp("", "zeitwork-dockerfile-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(dfDir)
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), req.Dockerfile, 0o644); err != nil {
		return Image{}, err
	}
	if req.DockerIgnore != nil {
		// The frontend prefers <Dockerfile>.dockerignore next to the
		// Dockerfile over the context's .dockerignore.
		if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile.dockerignore"), req.DockerIgnore, 0o644); err != nil {
			return Image{}, err
		}
	}
	contextFS, err := fsutil.NewFS(req.ContextDir)
	if err != nil {
		return Image{}, fmt.Errorf("build context: %w", err)
	}
	dockerfileFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		return Image{}, err
	}

	repo := req.Registry.Host + "/" + req.Repository
	ref := repo + ":" + req.Tag
	cacheRef := repo + ":buildcache"
	insecure := fmt.Sprint(req.Registry.Insecure)
	scoped := req.Registry.authConfig()

	opt := bk.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: frontendAttrs(req.Repository),
		LocalMounts:   map[string]fsutil.FS{"context": contextFS, "dockerfile": dockerfileFS},
		Exports: []bk.ExportEntry{{
			Type:  bk.ExporterImage,
			Attrs: map[string]string{"name": ref, "push": "true", "registry.insecure": insecure},
		}},
		// Registry-backed cache: any builder reuses any earlier build's
		// layers of this project, whichever machine built them.
		CacheExports: []bk.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{
			"ref": cacheRef, "mode": "max", "registry.insecure": insecure, "ignore-error": "true",
		}}},
		CacheImports: []bk.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{
			"ref": cacheRef, "registry.insecure": insecure,
		}}},
		Session: []session.Attachable{authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
			AuthConfigProvider: func(_ context.Context, host string, _ []string, _ authprovider.ExpireCachedAuthCheck) (types.AuthConfig, error) {
				if host == req.Registry.Host {
					return scoped, nil
				}
				return types.AuthConfig{}, nil // anonymous everywhere else (base images via the mirror)
			},
		})},
	}

	display, err := progressui.NewDisplay(progress, progressui.PlainMode)
	if err != nil {
		return Image{}, err
	}
	ch := make(chan *bk.SolveStatus)
	var res *bk.SolveResponse
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		var err error
		res, err = c.Solve(ectx, nil, opt, ch)
		return err
	})
	eg.Go(func() error {
		_, err := display.UpdateFrom(context.WithoutCancel(ectx), ch)
		return err
	})
	if err := eg.Wait(); err != nil {
		if ctx.Err() != nil {
			return Image{}, fmt.Errorf("build stopped: %w", context.Cause(ctx))
		}
		if code := status.Code(err); code == codes.Unavailable || code == codes.Canceled {
			return Image{}, fmt.Errorf("buildkitd at %s: %w", b.Addr, err)
		}
		return Image{}, fmt.Errorf("%w: %s", ErrBuild, buildError(err))
	}

	digest := res.ExporterResponse["containerimage.digest"]
	if !strings.HasPrefix(digest, "sha256:") {
		return Image{}, fmt.Errorf("buildkit returned no image digest")
	}
	size, err := imageSize(ctx, repo+"@"+digest, req.Registry)
	if err != nil {
		return Image{}, fmt.Errorf("read pushed image: %w", err)
	}
	return Image{Repository: repo, Tag: req.Tag, Digest: digest, Size: size}, nil
}

// frontendAttrs configures BuildKit's Dockerfile frontend for a build of
// repository (a project's).
//
// Cache mounts (RUN --mount=type=cache) live in buildkitd, shared by every
// build that names the same id (by default the target path): one project
// could read another's cached dependencies or plant files in them. The
// frontend prefixes every cache mount's id with BUILDKIT_CACHE_MOUNT_NS, so
// each project gets its own. That holds only for BuildKit's built-in
// frontend: a "# syntax=" line would hand the build to a frontend image of
// the Dockerfile's choosing, which can name any cache id, so "cmdline" (set
// when a frontend is invoked as such) pins the built-in one and the syntax
// line is ignored.
func frontendAttrs(repository string) map[string]string {
	return map[string]string{
		"filename":                          "Dockerfile",
		"build-arg:BUILDKIT_CACHE_MOUNT_NS": "zeitwork-project-" + repository,
		"cmdline":                           "",
	}
}

// buildError trims BuildKit's gRPC wrapping down to what a user can act on.
func buildError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "rpc error: code = Unknown desc = ")
	return msg
}

// imageSize is what the image takes in the registry: manifest, config and
// compressed layers.
func imageSize(ctx context.Context, ref string, reg Registry) (int64, error) {
	var opts []name.Option
	if reg.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return 0, err
	}
	auth := authn.Anonymous
	if reg.Username != "" {
		auth = &authn.Basic{Username: reg.Username, Password: reg.Password}
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuth(auth))
	if err != nil {
		return 0, err
	}
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}
