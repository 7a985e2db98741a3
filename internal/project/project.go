// Package project owns projects as their members see them: creation with a
// slug that can be a host name, reads and settings changes that only
// succeed for members of the owning organisation, deletion by its owners
// and admins (delete.go), and custom domains behind the same check. A
// project someone cannot see is ErrNotFound, exactly like one that does
// not exist, so that its existence never leaks.
package project

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/slug"
)

var (
	// ErrNotFound: no such project, or none the user may see.
	ErrNotFound = errors.New("project not found")
	// ErrInvalid: a request the caller must fix; the message says how.
	ErrInvalid = errors.New("invalid project")
	// ErrSlugTaken: another project has the slug (slugs are global: each is
	// a host name).
	ErrSlugTaken = errors.New("slug taken")
)

// Project is an app and how it is built and run.
type Project struct {
	ID                 uuid.UUID
	OrganisationID     uuid.UUID
	Slug               string
	Name               string
	Repository         string // "owner/name" on GitHub; "" when none is connected
	Branch             string
	RootDirectory      string
	DockerfilePath     string // "": detected
	Port               int32
	Replicas           int32
	CPUMillis          int32
	MemoryMB           int32
	HealthCheckPath    string
	ActiveDeploymentID *uuid.UUID
	CreatedAt          time.Time
	UpdatedAt          time.Time
}

func fromRow(r db.Project) Project {
	p := Project{
		ID: r.ID, OrganisationID: r.OrganisationID, Slug: r.Slug, Name: r.Name, Branch: r.Branch, RootDirectory: r.RootDirectory,
		Port: r.Port, Replicas: r.Replicas, CPUMillis: r.CpuMillis, MemoryMB: r.MemoryMb, HealthCheckPath: r.HealthCheckPath,
		ActiveDeploymentID: r.ActiveDeploymentID, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
	if r.DockerfilePath != nil {
		p.DockerfilePath = *r.DockerfilePath
	}
	if r.GithubRepositoryFullName != nil {
		p.Repository = *r.GithubRepositoryFullName
	}
	return p
}

// New is a project to create. Slug "" derives one from Name; Organisation
// uuid.Nil picks the user's only organisation.
type New struct {
	Name         string
	Slug         string
	Organisation uuid.UUID
	// Settings overrides the platform's defaults for how the project is
	// built and runs (its name, slug, branch and root directory come from
	// the fields above and the repository, and are ignored here). Giving
	// them at creation matters when the first deployment starts at once.
	Settings Patch
}

// MaxName is the longest project name.
const MaxName = 100

// Store reads and writes projects on behalf of a user.
type Store struct {
	DB db.Conn
}

func (s Store) q() *db.Queries { return db.New(s.DB) }

// Create makes a project in an organisation user belongs to, with the
// platform's defaults for everything New does not say.
func (s Store) Create(ctx context.Context, user uuid.UUID, n New) (Project, error) {
	name := strings.TrimSpace(n.Name)
	if name == "" || len(name) > MaxName {
		return Project{}, fmt.Errorf("%w: a name must have 1 to %d characters", ErrInvalid, MaxName)
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		// Postgres text cannot hold NUL, and no other control character
		// belongs in a name shown in lists.
		return Project{}, fmt.Errorf("%w: a name must not contain control characters", ErrInvalid)
	}
	sl := n.Slug
	if sl == "" {
		if sl = slug.From(name); sl == "" {
			return Project{}, fmt.Errorf("%w: no slug can be made from the name %q; give one", ErrInvalid, name)
		}
	} else if err := slug.Valid(sl); err != nil {
		return Project{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	settings := n.Settings.runSettings()
	if err := settings.check(); err != nil {
		return Project{}, err
	}
	org, err := s.organisation(ctx, user, n.Organisation)
	if err != nil {
		return Project{}, err
	}
	// The schema's defaults (which sqlc cannot leave out), then what n says.
	p := settings.apply(db.Project{Branch: "main", RootDirectory: "", Port: 8080, Replicas: 3, CpuMillis: 1000, MemoryMb: 512, HealthCheckPath: "/"})
	row, err := s.q().ProjectCreate(ctx, db.ProjectCreateParams{
		ID: id.New(), OrganisationID: org, Slug: sl, Name: name,
		Branch: p.Branch, RootDirectory: p.RootDirectory, DockerfilePath: p.DockerfilePath, Port: p.Port, Replicas: p.Replicas,
		CpuMillis: p.CpuMillis, MemoryMb: p.MemoryMb, HealthCheckPath: p.HealthCheckPath,
	})
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "projects_slug_unique" {
		return Project{}, fmt.Errorf("%w: %s", ErrSlugTaken, sl)
	}
	if err != nil {
		return Project{}, fmt.Errorf("create project %s: %w", sl, err)
	}
	return fromRow(row), nil
}

// organisation is the organisation a new project of user goes to: the one
// asked for, when user is a member, or user's only one.
func (s Store) organisation(ctx context.Context, user, asked uuid.UUID) (uuid.UUID, error) {
	if asked != uuid.Nil {
		_, err := s.q().OrganisationMemberGet(ctx, db.OrganisationMemberGetParams{OrganisationID: asked, UserID: user})
		if errors.Is(err, pgx.ErrNoRows) {
			return uuid.Nil, fmt.Errorf("%w: organisation_id names no organisation you belong to", ErrInvalid)
		}
		if err != nil {
			return uuid.Nil, fmt.Errorf("membership in %s: %w", asked, err)
		}
		return asked, nil
	}
	orgs, err := s.q().OrganisationListByUser(ctx, user)
	if err != nil {
		return uuid.Nil, fmt.Errorf("organisations of %s: %w", user, err)
	}
	switch len(orgs) {
	case 1:
		return orgs[0].ID, nil
	case 0:
		return uuid.Nil, fmt.Errorf("%w: you belong to no organisation", ErrInvalid)
	}
	return uuid.Nil, fmt.Errorf("%w: you belong to %d organisations; say which in organisation_id", ErrInvalid, len(orgs))
}

// Get returns the project when user may see it.
func (s Store) Get(ctx context.Context, user, project uuid.UUID) (Project, error) {
	row, err := s.q().ProjectGetForMember(ctx, db.ProjectGetForMemberParams{ID: project, UserID: user})
	if errors.Is(err, pgx.ErrNoRows) {
		return Project{}, fmt.Errorf("%w: %s", ErrNotFound, project)
	}
	if err != nil {
		return Project{}, fmt.Errorf("project %s: %w", project, err)
	}
	return fromRow(row), nil
}

// List returns up to limit of the projects user may see, with ids after
// after (uuid.Nil: from the first), oldest first.
func (s Store) List(ctx context.Context, user, after uuid.UUID, limit int32) ([]Project, error) {
	rows, err := s.q().ProjectListForMember(ctx, db.ProjectListForMemberParams{UserID: user, After: after, Max: limit})
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	out := make([]Project, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out, nil
}
