package project

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

var (
	// ErrInstallationNotFound: no such installation of the GitHub App, or
	// none linked to an organisation the user belongs to.
	ErrInstallationNotFound = errors.New("installation not found")
	// ErrInstallationSuspended: the installation is suspended; nothing is
	// connected to it or deployed from it until it is unsuspended.
	ErrInstallationSuspended = errors.New("installation suspended")
	// ErrInstallationTaken: the installation is linked to an organisation
	// the user does not belong to.
	ErrInstallationTaken = errors.New("installation linked to another organisation")
)

// Installation is the GitHub App installed on a GitHub account, linked to
// the organisation whose projects may use its repositories.
type Installation struct {
	ID             uuid.UUID
	GitHubID       int64 // GitHub's installation id
	OrganisationID uuid.UUID
	AccountLogin   string
	AccountType    string // "User" or "Organization"
	Suspended      bool
	CreatedAt      time.Time
}

func installationFromRow(r db.GithubInstallation) Installation {
	return Installation{
		ID: r.ID, GitHubID: r.GithubInstallationID, OrganisationID: r.OrganisationID,
		AccountLogin: r.AccountLogin, AccountType: r.AccountType, Suspended: r.SuspendedAt != nil, CreatedAt: r.CreatedAt,
	}
}

// GitHubInstallation is an installation as GitHub describes it.
type GitHubInstallation struct {
	ID           int64
	AccountLogin string
	AccountType  string
	Suspended    bool
}

// RecordInstallation links an installation to an organisation user
// belongs to (asked, or user's only one when uuid.Nil). The caller has
// proven that user may use the installation on GitHub. Recorded again, the
// installation keeps its organisation and takes GitHub's account and
// suspension; linked to an organisation user is not in, it is
// ErrInstallationTaken and nothing changes.
func (s Store) RecordInstallation(ctx context.Context, user, asked uuid.UUID, gh GitHubInstallation) (Installation, error) {
	if gh.ID <= 0 || gh.AccountLogin == "" || (gh.AccountType != "User" && gh.AccountType != "Organization") {
		return Installation{}, fmt.Errorf("%w: GitHub described installation %d as %q (%s)", ErrInvalid, gh.ID, gh.AccountLogin, gh.AccountType)
	}
	org, err := s.organisation(ctx, user, asked)
	if err != nil {
		return Installation{}, err
	}
	var out Installation
	err = pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		known, err := q.GithubInstallationGetByGithubID(ctx, gh.ID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("installation %d: %w", gh.ID, err)
		case known.OrganisationID != org:
			if _, err := q.OrganisationMemberGet(ctx, db.OrganisationMemberGetParams{OrganisationID: known.OrganisationID, UserID: user}); errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: installation %d", ErrInstallationTaken, gh.ID)
			} else if err != nil {
				return fmt.Errorf("membership in %s: %w", known.OrganisationID, err)
			}
		}
		row, err := q.GithubInstallationUpsert(ctx, db.GithubInstallationUpsertParams{
			ID: id.New(), GithubInstallationID: gh.ID, OrganisationID: org, AccountLogin: gh.AccountLogin, AccountType: gh.AccountType,
		})
		if err != nil {
			return fmt.Errorf("record installation %d: %w", gh.ID, err)
		}
		var at *time.Time
		if gh.Suspended {
			at = new(time.Now())
			if row.SuspendedAt != nil {
				at = row.SuspendedAt
			}
		}
		if row, err = q.GithubInstallationSetSuspended(ctx, db.GithubInstallationSetSuspendedParams{GithubInstallationID: gh.ID, SuspendedAt: at}); err != nil {
			return fmt.Errorf("suspension of installation %d: %w", gh.ID, err)
		}
		out = installationFromRow(row)
		return nil
	})
	return out, err
}

// Organisation is the organisation asked for when user belongs to it, or
// (asked uuid.Nil) user's only organisation; ErrInvalid says why not.
func (s Store) Organisation(ctx context.Context, user, asked uuid.UUID) (uuid.UUID, error) {
	return s.organisation(ctx, user, asked)
}

// Installation returns the installation GitHub numbers githubID when it
// is linked to an organisation user belongs to.
func (s Store) Installation(ctx context.Context, user uuid.UUID, githubID int64) (Installation, error) {
	row, err := s.q().GithubInstallationGetForMember(ctx, db.GithubInstallationGetForMemberParams{GithubInstallationID: githubID, UserID: user})
	if errors.Is(err, pgx.ErrNoRows) {
		return Installation{}, fmt.Errorf("%w: %d", ErrInstallationNotFound, githubID)
	}
	if err != nil {
		return Installation{}, fmt.Errorf("installation %d: %w", githubID, err)
	}
	return installationFromRow(row), nil
}

// Installations returns up to limit of the installations of user's
// organisations, with ids after after, oldest first.
func (s Store) Installations(ctx context.Context, user, after uuid.UUID, limit int32) ([]Installation, error) {
	rows, err := s.q().GithubInstallationListForMember(ctx, db.GithubInstallationListForMemberParams{UserID: user, After: after, Max: limit})
	if err != nil {
		return nil, fmt.Errorf("list installations: %w", err)
	}
	out := make([]Installation, len(rows))
	for i, r := range rows {
		out[i] = installationFromRow(r)
	}
	return out, nil
}

// Repository is a GitHub repository connected to a project: through which
// installation, which repository (by GitHub's id, which survives renames),
// and what production builds from.
type Repository struct {
	Installation  Installation
	ID            int64
	FullName      string
	Branch        string
	RootDirectory string
}

// ValidBranch is BranchProblem as an ErrInvalid error.
func ValidBranch(b string) error {
	if why := BranchProblem(b); why != "" {
		return fmt.Errorf("%w: branch %s", ErrInvalid, why)
	}
	return nil
}

// CleanRootDirectory returns the root directory as stored: a relative
// path inside the repository without "." or ".." steps, "" for the
// repository's root; a leading slash is read as the root.
func CleanRootDirectory(dir string) (string, error) {
	trimmed := strings.Trim(dir, "/")
	if trimmed == "" || trimmed == "." {
		return "", nil
	}
	if len(dir) > 1024 || strings.ContainsAny(dir, "\\\x00") || strings.ContainsFunc(dir, unicode.IsControl) {
		return "", fmt.Errorf("%w: root_directory %q is not a directory path", ErrInvalid, dir)
	}
	for part := range strings.SplitSeq(trimmed, "/") {
		if part == ".." || part == "." || part == "" {
			return "", fmt.Errorf("%w: root_directory %q must be a path inside the repository, without . or .. steps", ErrInvalid, dir)
		}
	}
	return path.Clean(trimmed), nil
}

// usable checks that the installation may have a repository of project p
// connected through it.
func usable(in Installation, org uuid.UUID) error {
	switch {
	case in.Suspended:
		return fmt.Errorf("%w: installation %d on %s", ErrInstallationSuspended, in.GitHubID, in.AccountLogin)
	case in.OrganisationID != org:
		return fmt.Errorf("%w: installation %d belongs to another of your organisations than the project", ErrInvalid, in.GitHubID)
	}
	return nil
}

// CreateWithRepository creates a project (as Create) with repo connected,
// on conn: given a transaction, the project exists only if the transaction
// commits, which is how its first deployment is created with it.
func (s Store) CreateWithRepository(ctx context.Context, user uuid.UUID, n New, repo Repository) (Project, error) {
	if n.Organisation == uuid.Nil {
		n.Organisation = repo.Installation.OrganisationID
	}
	if err := usable(repo.Installation, n.Organisation); err != nil {
		return Project{}, err
	}
	if err := ValidBranch(repo.Branch); err != nil {
		return Project{}, err
	}
	var out Project
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		p, err := Store{DB: tx}.Create(ctx, user, n)
		if err != nil {
			return err
		}
		out, err = connect(ctx, db.New(tx), p.ID, repo)
		return err
	})
	return out, err
}

// ConnectRepository connects repo to project (replacing any), when user
// may see the project and the installation belongs to its organisation.
func (s Store) ConnectRepository(ctx context.Context, user, project uuid.UUID, repo Repository) (Project, error) {
	if err := ValidBranch(repo.Branch); err != nil {
		return Project{}, err
	}
	var out Project
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		p, err := Store{DB: tx}.Get(ctx, user, project)
		if err != nil {
			return err
		}
		if err := usable(repo.Installation, p.OrganisationID); err != nil {
			return err
		}
		out, err = connect(ctx, db.New(tx), p.ID, repo)
		return err
	})
	return out, err
}

func connect(ctx context.Context, q *db.Queries, project uuid.UUID, repo Repository) (Project, error) {
	root, err := CleanRootDirectory(repo.RootDirectory)
	if err != nil {
		return Project{}, err
	}
	row, err := q.ProjectConnectRepository(ctx, db.ProjectConnectRepositoryParams{
		ID: project, GithubInstallationID: &repo.Installation.ID, GithubRepositoryID: &repo.ID, GithubRepositoryFullName: &repo.FullName,
		Branch: repo.Branch, RootDirectory: root,
	})
	if err != nil {
		return Project{}, fmt.Errorf("connect %s to project %s: %w", repo.FullName, project, err)
	}
	return fromRow(row), nil
}

// DisconnectRepository leaves project without a repository: pushes no
// longer deploy it; its deployments stay.
func (s Store) DisconnectRepository(ctx context.Context, user, project uuid.UUID) (Project, error) {
	var out Project
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		p, err := Store{DB: tx}.Get(ctx, user, project)
		if err != nil {
			return err
		}
		row, err := db.New(tx).ProjectSetRepository(ctx, db.ProjectSetRepositoryParams{ID: p.ID})
		if err != nil {
			return fmt.Errorf("disconnect project %s: %w", p.ID, err)
		}
		out = fromRow(row)
		return nil
	})
	return out, err
}
