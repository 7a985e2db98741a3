package build

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Queue is the task queue builders work; Task is its one kind of task, the
// contract between whoever asks for a build and the builder role.
const Queue = "build"

// Task asks a builder to run one build. It carries only the build's
// id: everything else is read from the database when the task runs, so a
// retried task sees the current state, not a stale copy.
type Task struct {
	BuildID uuid.UUID `json:"build_id"`
}

// Kind implements queue.Task.
func (Task) Kind() string { return "build" }

// RescueAfter is how long a build's task runs before it may be retried as
// stuck (its builder may have died): the retry takes the build over only
// once the holder's lease (BUILD_LEASE) has run out, and waits while a live
// builder renews it, so a build never runs twice at once and its task may
// be rescued long before the build could have ended (see queue.Rescuable).
const RescueAfter = time.Minute

// InsertOpts make a build's task unique, so enqueuing twice (a retried
// webhook) never runs the build twice at once.
func (Task) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 3, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// Source says what to build: a commit of the project's repository, or an
// archive a CLI uploaded to the object store, and which environment the
// deployment is for.
type Source struct {
	CommitSHA     string // 40 hex digits
	Ref           string // e.g. refs/heads/main, for display; a preview's branch
	CommitMessage string
	ArchiveKey    string // object key of an uploaded .tar.gz
	// Environment is production when empty. A preview is of a commit of
	// a branch: Ref must be refs/heads/<branch>.
	Environment deployment.Environment
	PushedBy    string // the GitHub login that pushed the commit, if a push
}

var (
	// ErrInvalidSource: the source reference cannot be built.
	ErrInvalidSource = errors.New("invalid source")
)

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (s Source) validate(p db.Project) error {
	switch {
	case s.CommitSHA != "" && s.ArchiveKey != "":
		return fmt.Errorf("%w: give a commit or an archive, not both", ErrInvalidSource)
	case s.CommitSHA != "":
		if !shaRe.MatchString(s.CommitSHA) {
			return fmt.Errorf("%w: commit must be 40 lower-case hex digits", ErrInvalidSource)
		}
		if p.GithubRepositoryFullName == nil || p.GithubInstallationID == nil {
			return fmt.Errorf("%w: project %s has no connected repository", ErrInvalidSource, p.Slug)
		}
	case s.ArchiveKey != "":
		if strings.HasPrefix(s.ArchiveKey, "/") || path.Clean(s.ArchiveKey) != s.ArchiveKey || strings.Contains(s.ArchiveKey, "..") ||
			strings.ContainsFunc(s.ArchiveKey, unicode.IsControl) {
			return fmt.Errorf("%w: archive key %q is not a clean object key", ErrInvalidSource, s.ArchiveKey)
		}
	default:
		return fmt.Errorf("%w: give a commit or an archive", ErrInvalidSource)
	}
	switch s.Environment {
	case "", deployment.EnvironmentProduction:
	case deployment.EnvironmentPreview:
		if b, ok := strings.CutPrefix(s.Ref, "refs/heads/"); s.CommitSHA == "" || !ok || b == "" {
			return fmt.Errorf("%w: a preview is of a commit of a branch (refs/heads/<branch>)", ErrInvalidSource)
		}
	default:
		return fmt.Errorf("%w: environment %q is not production or preview", ErrInvalidSource, s.Environment)
	}
	return nil
}

// Enqueuer adds a task as part of a transaction; *queue.Queue is one.
type Enqueuer interface {
	EnqueueTx(ctx context.Context, tx pgx.Tx, task queue.Task) (int64, error)
}

// Requested is what Request created.
type Requested struct {
	Deployment db.Deployment
	Build      Build
}

// Request creates a deployment of project from src, its first build,
// and the task that runs it, in one transaction: either all three exist or
// none does. Given a transaction as conn (a webhook recording its delivery
// with the deployment), it runs inside it as a savepoint.
func Request(ctx context.Context, conn db.Conn, q Enqueuer, projectID uuid.UUID, src Source, createdBy *uuid.UUID) (Requested, error) {
	var out Requested
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		store := NewStore(tx)
		p, err := store.Project(ctx, projectID)
		if err != nil {
			return err
		}
		if err := src.validate(p); err != nil {
			return err
		}
		params := db.DeploymentCreateParams{
			ID: id.New(), ProjectID: p.ID, Replicas: p.Replicas, CreatedByUserID: createdBy, SourceType: string(deployment.SourceUpload),
			Environment: string(src.Environment), PushedBy: nonEmpty(src.PushedBy),
		}
		if src.CommitSHA != "" {
			params.SourceType = string(deployment.SourceGitHub)
			params.GithubCommitSha = &src.CommitSHA
			params.GithubRef = nonEmpty(src.Ref)
			params.CommitMessage = nonEmpty(src.CommitMessage)
		} else {
			params.SourceArchiveKey = &src.ArchiveKey
		}
		if out.Deployment, out.Build, err = store.Create(ctx, params); err != nil {
			return err
		}
		_, err = q.EnqueueTx(ctx, tx, Task{BuildID: out.Build.ID})
		return err
	})
	switch {
	case errors.Is(err, ErrInvalidSource), errors.Is(err, ErrProjectNotFound):
		return Requested{}, err // already says what is wrong, for the client
	case err != nil:
		return Requested{}, fmt.Errorf("request build: %w", err)
	}
	return out, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
