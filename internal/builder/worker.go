package builder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Fetcher puts a deployment's source tree into dir (already unpacked,
// safely) and returns the directory to build: dir itself or the project's
// root directory inside it.
type Fetcher interface {
	Fetch(ctx context.Context, p db.Project, d db.Deployment, dir string) (string, error)
}

// Planner decides how to build the tree at dir; dockerfilePath is the
// project's setting ("" for the default).
type Planner func(dir, dockerfilePath string) (detect.Plan, error)

// UserError marks a failure caused by the source itself (a bad archive, no
// way to build it): reported on the deployment, never retried.
type UserError struct{ Err error }

func (e UserError) Error() string { return e.Err.Error() }
func (e UserError) Unwrap() error { return e.Err }

// Config tunes a builder.
type Config struct {
	BuilderID string        // names this builder in builds.builder_id
	Timeout   time.Duration // a build's whole deadline
	// Lease is how long a builder's claim lasts without renewal; a builder
	// that dies is replaced this long after its last renewal.
	Lease time.Duration
	// Registry is where builds push; its username and password are never
	// handed to a build (they would reach every project's images).
	Registry Registry
	Logs     buildlog.Limits
	// Credentials gives each build registry credentials of its own, valid
	// only for its project's repository (see registryauth). Without it a
	// build refuses to start (ErrNoCredentials) unless AnonymousRegistry
	// says the registry needs none.
	Credentials func(project uuid.UUID, ttl time.Duration) (username, password string)
	// AnonymousRegistry: the registry takes pushes without authentication
	// (a local development registry), so builds push with no credentials.
	AnonymousRegistry bool
	// Built runs inside the transaction that records a successful build,
	// e.g. to enqueue the deploy task; nil does nothing.
	Built func(ctx context.Context, tx pgx.Tx, d db.Deployment, img db.Image) error
}

// Service runs builds.
type Service struct {
	Pool     *pgxpool.Pool
	BuildKit BuildKit
	Fetcher  Fetcher
	Plan     Planner
	Config   Config
	Log      *slog.Logger
}

// Worker adapts Service to the task queue.
type Worker struct {
	river.WorkerDefaults[build.Task]
	Service *Service
}

// Timeout lets the build's own deadline fire first.
func (w *Worker) Timeout(*queue.Job[build.Task]) time.Duration {
	return w.Service.Config.Timeout + timeoutMargin
}

// Work implements queue.Worker.
func (w *Worker) Work(ctx context.Context, job *queue.Job[build.Task]) error {
	return w.Service.Run(ctx, job.Args.BuildID, job.Attempt >= job.MaxAttempts)
}

// errCancelled is the cause when the build stops being ours mid-run.
var errCancelled = errors.New("build cancelled")

// ErrNoCredentials: the builder has no registry credentials for the
// build's project, and falls back to none of its own. Final: retrying
// will not mint any.
var ErrNoCredentials = errors.New("no registry credentials for the project")

// Run runs one build to its end. It returns an error only for failures
// worth retrying (infrastructure); everything else ends in the build's and
// the deployment's status.
func (s *Service) Run(ctx context.Context, buildID uuid.UUID, lastAttempt bool) error {
	store := build.NewStore(s.Pool)
	log := s.Log.With("build_id", buildID)
	b, err := store.Claim(ctx, buildID, s.Config.BuilderID, time.Now().Add(s.Config.Lease))
	switch {
	case errors.Is(err, build.ErrHeld):
		// Look again once the holder's lease would have run out. A build
		// never runs twice at once.
		return river.JobSnooze(time.Until(*b.DeadlineAt) + time.Second)
	case errors.Is(err, build.ErrEnded):
		log.InfoContext(ctx, "build already ended", "status", b.Status)
		return nil
	case errors.Is(err, build.ErrNotFound):
		// Its project was deleted: there is nothing to build, now or on a retry.
		log.InfoContext(ctx, "build gone: its project was deleted")
		return nil
	case err != nil:
		return err
	}
	dep, err := store.StartDeployment(ctx, b)
	if errors.Is(err, build.ErrDeploymentMoved) {
		// Cancelled or superseded: nothing to build.
		return store.Cancel(ctx, b.ID)
	}
	if err != nil {
		return fmt.Errorf("build %s: %w", buildID, err)
	}

	logs := buildlog.NewWriter(s.Pool, buildID, s.Config.Logs, log)
	defer logs.Close(context.WithoutCancel(ctx)) //nolint:errcheck // logging is best effort

	bctx, cancel := context.WithTimeoutCause(ctx, s.Config.Timeout, fmt.Errorf("build exceeded its deadline of %s", s.Config.Timeout))
	defer cancel()
	bctx, cancelLease := context.WithCancelCause(bctx)
	go s.renewLease(bctx, store, buildID, cancelLease)

	img, buildErr := s.build(bctx, store, dep, b, logs)
	// What follows writes buildErr into the build's log, the deployment's
	// failure reason and the task's errors: none may carry a credential.
	buildErr = redact(buildErr)
	if cause := context.Cause(bctx); buildErr != nil && bctx.Err() != nil && ctx.Err() == nil {
		buildErr = UserError{cause} // deadline or cancellation: final either way
	}
	cancelLease(nil)

	ctx = context.WithoutCancel(ctx) // the outcome is recorded whatever happens to the task
	// The log is stored whole before the outcome is recorded: whoever sees
	// the build end (the API, `zeitwork logs`) reads all of it, the last
	// lines included, rather than what the last flush had stored.
	last := func(format string, args ...any) {
		logs.Line(buildlog.System, format, args...)
		logs.Close(ctx) //nolint:errcheck // logging is best effort
	}
	switch {
	case buildErr == nil:
		last("pushed %s (%s, %d bytes)", img.Ref(), img.Digest, img.Size)
		return store.Succeed(ctx, b, dep.ProjectID, build.Image{Repository: img.Repository, Tag: img.Tag, Digest: img.Digest, Size: img.Size}, s.Config.Built)
	case errors.Is(buildErr, errCancelled):
		last("build cancelled")
		return store.Fail(ctx, b, build.StatusCancelled, "build cancelled")
	case errors.As(buildErr, new(UserError)), errors.Is(buildErr, ErrBuild), errors.Is(buildErr, ErrNoCredentials), lastAttempt:
		// A failure of the build itself already says so (ErrBuild).
		reason := buildErr.Error()
		if !strings.HasPrefix(reason, ErrBuild.Error()+": ") {
			reason = ErrBuild.Error() + ": " + reason
		}
		last("%s", reason)
		return store.Fail(ctx, b, build.StatusFailed, truncate(reason))
	default:
		last("build interrupted (%v); it will be retried", buildErr)
		if err := store.Requeue(ctx, buildID, s.Config.BuilderID); err != nil {
			log.ErrorContext(ctx, "requeue build", "err", err)
		}
		return buildErr
	}
}

// truncate keeps a failure reason to a size worth showing.
func truncate(reason string) string {
	if len(reason) > 2000 {
		return reason[:2000] + "…"
	}
	return reason
}

func (s *Service) build(ctx context.Context, store *build.Store, dep db.Deployment, b build.Build, logs *buildlog.Writer) (Image, error) {
	p, err := store.Project(ctx, dep.ProjectID)
	if err != nil {
		return Image{}, err
	}
	// Before anything is fetched: a build that could only push with
	// someone else's credentials does not start.
	reg, err := s.registryFor(p.ID)
	if err != nil {
		return Image{}, err
	}
	work, err := os.MkdirTemp("", "zeitwork-build-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(work)

	logs.Line(buildlog.System, "fetching source (%s)", describeSource(dep))
	dir, err := s.Fetcher.Fetch(ctx, p, dep, work)
	if err != nil {
		return Image{}, err
	}
	plan, err := s.Plan(dir, deref(p.DockerfilePath))
	if err != nil {
		return Image{}, UserError{err}
	}
	logs.Line(buildlog.System, "building as %s: %s", plan.Kind, strings.Join(plan.Reasons, "; "))
	if err := store.SetDetectedKind(ctx, b.ID, string(plan.Kind)); err != nil {
		return Image{}, err
	}
	return s.BuildKit.Build(ctx, Request{
		ContextDir: dir, Dockerfile: plan.Dockerfile, DockerIgnore: plan.DockerIgnore,
		Repository: p.ID.String(), Tag: dep.ID.String(), Registry: reg,
	}, logs.Stream(buildlog.Stdout))
}

// registryFor is the registry as project's build sees it: with credentials
// for that project only, or none at all for an anonymous registry — never
// the builder's own.
func (s *Service) registryFor(project uuid.UUID) (Registry, error) {
	reg := Registry{Host: s.Config.Registry.Host, Insecure: s.Config.Registry.Insecure}
	switch {
	case s.Config.Credentials != nil:
		reg.Username, reg.Password = s.Config.Credentials(project, s.Config.Timeout+timeoutMargin)
		if reg.Username == "" || reg.Password == "" {
			return Registry{}, fmt.Errorf("%w %s: none were minted", ErrNoCredentials, project)
		}
	case !s.Config.AnonymousRegistry:
		return Registry{}, fmt.Errorf("%w %s: refusing to build (set REGISTRY_CREDENTIAL_SECRET)", ErrNoCredentials, project)
	}
	return reg, nil
}

// renewLease extends the claim while the build runs; when the claim is
// gone (the build was cancelled, or another builder took it over after we
// stalled) the build is stopped.
func (s *Service) renewLease(ctx context.Context, store *build.Store, buildID uuid.UUID, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.Config.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := store.Renew(ctx, buildID, s.Config.BuilderID, time.Now().Add(s.Config.Lease)); errors.Is(err, build.ErrLeaseLost) {
			cancel(errCancelled)
			return
		}
		// A failed renewal (database blip) is retried on the next tick;
		// the lease is three ticks long.
	}
}

func describeSource(d db.Deployment) string {
	if d.GithubCommitSha != nil {
		return "commit " + (*d.GithubCommitSha)[:min(12, len(*d.GithubCommitSha))]
	}
	return "uploaded archive"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
