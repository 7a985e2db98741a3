package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/github"
	"github.com/zeitwork/zeitwork/internal/source"
)

// SourceFetcher gets a deployment's source from GitHub (a commit of the
// project's repository, with the installation's token) or from the object
// store (an archive a CLI uploaded), and unpacks it safely.
type SourceFetcher struct {
	Queries *db.Queries
	GitHub  *github.Client // nil: this builder cannot build from GitHub
	S3      *minio.Client
	Bucket  string
	Limits  source.Limits
}

// Fetch implements Fetcher. Its errors name no credential: they end up in
// the build's log, the deployment's failure reason and the task's errors.
func (f SourceFetcher) Fetch(ctx context.Context, p db.Project, d db.Deployment, dir string) (_ string, err error) {
	defer func() { err = redact(err) }()
	rc, err := f.open(ctx, p, d)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	src := filepath.Join(dir, "src")
	if _, err := source.Unpack(ctx, rc, src, f.Limits); err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		return "", UserError{fmt.Errorf("unpack source: %w", err)}
	}
	root, err := source.Subdir(src, p.RootDirectory)
	if err != nil {
		return "", UserError{fmt.Errorf("root directory %q: %w", p.RootDirectory, err)}
	}
	return root, nil
}

func (f SourceFetcher) open(ctx context.Context, p db.Project, d db.Deployment) (io.ReadCloser, error) {
	if d.GithubCommitSha == nil {
		if d.SourceArchiveKey == nil {
			return nil, UserError{errors.New("deployment has no source")}
		}
		rc, err := source.FromS3(ctx, f.S3, f.Bucket, *d.SourceArchiveKey)
		if errors.Is(err, source.ErrNotFound) {
			return nil, UserError{fmt.Errorf("uploaded archive %s: %w", *d.SourceArchiveKey, err)}
		}
		return rc, err
	}
	if f.GitHub == nil {
		return nil, errors.New("this builder has no GitHub App configured")
	}
	if p.GithubInstallationID == nil || p.GithubRepositoryFullName == nil {
		return nil, UserError{errors.New("the project has no connected GitHub repository")}
	}
	inst, err := f.Queries.GithubInstallationGetByID(ctx, *p.GithubInstallationID)
	if err != nil {
		return nil, fmt.Errorf("github installation: %w", err)
	}
	owner, repo, ok := strings.Cut(*p.GithubRepositoryFullName, "/")
	if !ok {
		return nil, UserError{fmt.Errorf("repository name %q is not owner/name", *p.GithubRepositoryFullName)}
	}
	rc, err := f.GitHub.DownloadTarball(ctx, inst.GithubInstallationID, owner, repo, *d.GithubCommitSha)
	switch {
	case errors.Is(err, github.ErrNotFound), errors.Is(err, github.ErrForbidden), errors.Is(err, github.ErrUnauthorized):
		return nil, UserError{err} // the installation lost access: retrying will not help
	case err != nil:
		return nil, err // rate limits and outages: the task is retried
	}
	return rc, nil
}
