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

	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Fetcher puts a deployment's source tree into dir (already unpacked,
// safely) and returns the directory to build: dir itself or the project's
// root directory inside it.
type Fetcher interface {
	Fetch(ctx context.Context, p db.Project, d db.Deployment, dir string) (string, error)
}

// Plan is how a tree is to be built.
type Plan struct {
	Kind         string // "dockerfile", "nextjs", ...
	Dockerfile   []byte
	DockerIgnore []byte // nil: the tree's own .dockerignore applies
	Reasons      []string
}

// Planner decides how to build the tree at dir; dockerfilePath is the
// project's setting ("" for the default).
type Planner func(dir, dockerfilePath string) (Plan, error)

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
	Lease    time.Duration
	Registry Registry
	Logs     buildlog.Limits
	// Credentials, when set, gives each build registry credentials of its
	// own, valid only for its project's repository (see registryauth); the
	// Registry's own username and password are then not handed to builds.
	Credentials func(project uuid.UUID, ttl time.Duration) (username, password string)
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
	river.WorkerDefaults[BuildTask]
	Service *Service
}

// Timeout lets the build's own deadline fire first.
func (w *Worker) Timeout(*queue.Job[BuildTask]) time.Duration {
	return w.Service.Config.Timeout + timeoutMargin
}

// Work implements queue.Worker.
func (w *Worker) Work(ctx context.Context, job *queue.Job[BuildTask]) error {
	return w.Service.Run(ctx, job.Args.BuildID, job.Attempt >= job.MaxAttempts)
}

// errCancelled is the cause when the build stops being ours mid-run.
var errCancelled = errors.New("build cancelled")

// Run runs one build to its end. It returns an error only for failures
// worth retrying (infrastructure); everything else ends in the build's and
// the deployment's status.
func (s *Service) Run(ctx context.Context, buildID uuid.UUID, lastAttempt bool) error {
	q := db.New(s.Pool)
	log := s.Log.With("build_id", buildID)
	build, err := q.BuildClaim(ctx, db.BuildClaimParams{ID: buildID, BuilderID: s.Config.BuilderID, DeadlineAt: time.Now().Add(s.Config.Lease)})
	if errors.Is(err, pgx.ErrNoRows) {
		current, err := q.BuildGetByID(ctx, buildID)
		if err != nil {
			return fmt.Errorf("build %s: %w", buildID, err)
		}
		if current.Status == "running" && current.DeadlineAt != nil {
			// Another builder holds it: look again once its lease would
			// have run out. A build never runs twice at once.
			return river.JobSnooze(time.Until(*current.DeadlineAt) + time.Second)
		}
		log.InfoContext(ctx, "build already ended", "status", current.Status)
		return nil
	}
	if err != nil {
		return fmt.Errorf("claim build %s: %w", buildID, err)
	}
	dep, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: build.DeploymentID, Status: "building", FromStatuses: []string{"queued", "building"}})
	if errors.Is(err, pgx.ErrNoRows) {
		// The deployment moved on (cancelled, superseded): nothing to build.
		_, ferr := q.BuildFinish(ctx, db.BuildFinishParams{ID: buildID, Status: "cancelled"})
		return ferr
	}
	if err != nil {
		return fmt.Errorf("build %s: %w", buildID, err)
	}

	logs := buildlog.NewWriter(s.Pool, buildID, s.Config.Logs, log)
	defer logs.Close(context.WithoutCancel(ctx)) //nolint:errcheck // logging is best effort

	bctx, cancel := context.WithTimeoutCause(ctx, s.Config.Timeout, fmt.Errorf("build exceeded its deadline of %s", s.Config.Timeout))
	defer cancel()
	bctx, cancelLease := context.WithCancelCause(bctx)
	go s.renewLease(bctx, buildID, cancelLease)

	img, buildErr := s.build(bctx, dep, build, logs)
	if cause := context.Cause(bctx); buildErr != nil && bctx.Err() != nil && ctx.Err() == nil {
		buildErr = UserError{cause} // deadline or cancellation: final either way
	}
	cancelLease(nil)

	switch {
	case buildErr == nil:
		logs.Line(buildlog.System, "pushed %s (%s, %d bytes)", img.Ref(), img.Digest, img.Size)
		return s.succeed(ctx, dep, build, img)
	case errors.Is(buildErr, errCancelled):
		logs.Line(buildlog.System, "build cancelled")
		return s.fail(ctx, dep, build, "build cancelled")
	case errors.As(buildErr, new(UserError)), errors.Is(buildErr, ErrBuild), lastAttempt:
		logs.Line(buildlog.System, "build failed: %v", buildErr)
		return s.fail(ctx, dep, build, "build failed: "+buildErr.Error())
	default:
		logs.Line(buildlog.System, "build interrupted (%v); it will be retried", buildErr)
		if _, err := q.BuildRequeue(context.WithoutCancel(ctx), db.BuildRequeueParams{ID: buildID, BuilderID: s.Config.BuilderID}); err != nil {
			log.ErrorContext(ctx, "requeue build", "err", err)
		}
		return buildErr
	}
}

func (s *Service) build(ctx context.Context, dep db.Deployment, build db.Build, logs *buildlog.Writer) (Image, error) {
	q := db.New(s.Pool)
	p, err := q.ProjectGetByID(ctx, dep.ProjectID)
	if err != nil {
		return Image{}, fmt.Errorf("project: %w", err)
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
	if _, err := q.BuildSetDetectedKind(ctx, db.BuildSetDetectedKindParams{ID: build.ID, DetectedKind: plan.Kind}); err != nil {
		return Image{}, err
	}
	reg := s.Config.Registry
	if s.Config.Credentials != nil {
		reg.Username, reg.Password = s.Config.Credentials(p.ID, s.Config.Timeout+timeoutMargin)
	}
	return s.BuildKit.Build(ctx, Request{
		ContextDir: dir, Dockerfile: plan.Dockerfile, DockerIgnore: plan.DockerIgnore,
		Repository: p.ID.String(), Tag: dep.ID.String(), Registry: reg,
	}, logs.Stream(buildlog.Stdout))
}

// renewLease extends the claim while the build runs; when the claim is
// gone (the build was cancelled, or another builder took it over after we
// stalled) the build is stopped.
func (s *Service) renewLease(ctx context.Context, buildID uuid.UUID, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.Config.Lease / 3)
	defer t.Stop()
	q := db.New(s.Pool)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := q.BuildExtendDeadline(ctx, db.BuildExtendDeadlineParams{ID: buildID, BuilderID: s.Config.BuilderID, DeadlineAt: time.Now().Add(s.Config.Lease)})
		if err == nil && n == 0 {
			cancel(errCancelled)
			return
		}
		// A failed renewal (database blip) is retried on the next tick;
		// the lease is three ticks long.
	}
}

func (s *Service) succeed(ctx context.Context, dep db.Deployment, build db.Build, img Image) error {
	ctx = context.WithoutCancel(ctx)
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if _, err := q.BuildFinish(ctx, db.BuildFinishParams{ID: build.ID, Status: "succeeded"}); errors.Is(err, pgx.ErrNoRows) {
			return nil // cancelled at the last moment: record nothing
		} else if err != nil {
			return err
		}
		row, err := q.ImageUpsert(ctx, db.ImageUpsertParams{
			ID: id.New(), ProjectID: dep.ProjectID, BuildID: &build.ID,
			Repository: img.Repository, Tag: img.Tag, Digest: img.Digest, SizeBytes: &img.Size,
		})
		if err != nil {
			return err
		}
		if _, err := q.DeploymentSetImage(ctx, db.DeploymentSetImageParams{ID: dep.ID, ImageID: row.ID}); err != nil {
			return err
		}
		dep, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: dep.ID, Status: "deploying", FromStatuses: []string{"building"}})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // the deployment was cancelled meanwhile; the image stays recorded
		} else if err != nil {
			return err
		}
		if s.Config.Built != nil {
			return s.Config.Built(ctx, tx, dep, row)
		}
		return nil
	})
}

func (s *Service) fail(ctx context.Context, dep db.Deployment, build db.Build, reason string) error {
	ctx = context.WithoutCancel(ctx)
	if len(reason) > 2000 {
		reason = reason[:2000] + "…"
	}
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		status := "failed"
		if reason == "build cancelled" {
			status = "cancelled"
		}
		if _, err := q.BuildFinish(ctx, db.BuildFinishParams{ID: build.ID, Status: status, FailureReason: &reason}); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: dep.ID, Status: "failed", FailureReason: &reason, FromStatuses: []string{"queued", "building"}})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
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
