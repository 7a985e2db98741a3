package project

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/slug"
)

// Bounds of a project's settings. The lower ones are what an instance
// needs to start at all (instance.Create refuses less); the upper ones
// keep a typo (memory_mb: 5120000) from reaching the scheduler, which
// could only say that no node is that large.
const (
	MinReplicas  = 3 // one per failure domain the scheduler spreads over
	MaxReplicas  = 100
	MinCPUMillis = 10
	MaxCPUMillis = 64_000
	MinMemoryMB  = 16
	MaxMemoryMB  = 262_144
	MaxPath      = 1024 // root_directory, dockerfile_path, health_check_path
)

// Patch changes some of a project's settings: a nil field is left as it
// is. Settings apply to the next deployment; running ones keep theirs.
type Patch struct {
	Name            *string
	Slug            *string // the host <slug>.<apps-domain> changes with it
	Branch          *string
	RootDirectory   *string
	DockerfilePath  *string // "" is refused; ClearDockerfilePath unsets it
	Port            *int32
	Replicas        *int32
	CPUMillis       *int32
	MemoryMB        *int32
	HealthCheckPath *string
	// ClearDockerfilePath unsets the Dockerfile path, so that the build
	// detects how to build the tree again.
	ClearDockerfilePath bool
}

// Update applies patch to a project user may see, all or nothing: every
// field is checked first, and an error names each field that is wrong.
func (s Store) Update(ctx context.Context, user, project uuid.UUID, patch Patch) (Project, error) {
	if err := patch.check(); err != nil {
		return Project{}, err
	}
	var out Project
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		if _, err := (Store{DB: tx}).Get(ctx, user, project); err != nil {
			return err
		}
		row, err := q.ProjectGetForUpdate(ctx, project)
		if errors.Is(err, pgx.ErrNoRows) { // deleted since
			return fmt.Errorf("%w: %s", ErrNotFound, project)
		}
		if err != nil {
			return fmt.Errorf("project %s: %w", project, err)
		}
		next := patch.apply(row)
		if next == row {
			out = fromRow(row)
			return nil
		}
		updated, err := q.ProjectUpdate(ctx, db.ProjectUpdateParams{
			ID: project, Slug: next.Slug, Name: next.Name, Branch: next.Branch, RootDirectory: next.RootDirectory,
			DockerfilePath: next.DockerfilePath, Port: next.Port, Replicas: next.Replicas, CpuMillis: next.CpuMillis,
			MemoryMb: next.MemoryMb, HealthCheckPath: next.HealthCheckPath,
		})
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "projects_slug_unique" {
			return fmt.Errorf("%w: slug %s", ErrSlugTaken, next.Slug)
		}
		if err != nil {
			return fmt.Errorf("update project %s: %w", project, err)
		}
		out = fromRow(updated)
		return nil
	})
	return out, err
}

// apply returns row with the patch's fields. Comparing the result with
// row says whether anything changes; pointer fields compare by value.
func (p Patch) apply(row db.Project) db.Project {
	if p.Name != nil {
		row.Name = strings.TrimSpace(*p.Name)
	}
	set(&row.Slug, p.Slug)
	set(&row.Branch, p.Branch)
	set(&row.RootDirectory, p.RootDirectory)
	set(&row.Port, p.Port)
	set(&row.Replicas, p.Replicas)
	set(&row.CpuMillis, p.CPUMillis)
	set(&row.MemoryMb, p.MemoryMB)
	set(&row.HealthCheckPath, p.HealthCheckPath)
	switch {
	case p.ClearDockerfilePath:
		row.DockerfilePath = nil
	case p.DockerfilePath != nil && (row.DockerfilePath == nil || *row.DockerfilePath != *p.DockerfilePath):
		v := *p.DockerfilePath
		row.DockerfilePath = &v
	}
	return row
}

// runSettings is p without what a new project takes from elsewhere: its
// name, slug, branch and root directory.
func (p Patch) runSettings() Patch {
	p.Name, p.Slug, p.Branch, p.RootDirectory, p.ClearDockerfilePath = nil, nil, nil, nil, false
	return p
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// check says what is wrong with every field of the patch, naming each.
func (p Patch) check() error {
	var bad []string
	add := func(field, format string, args ...any) {
		bad = append(bad, field+": "+fmt.Sprintf(format, args...))
	}
	if p.Name != nil {
		if n := strings.TrimSpace(*p.Name); n == "" || len(n) > MaxName {
			add("name", "must have 1 to %d characters", MaxName)
		}
	}
	if p.Slug != nil {
		if err := slug.Valid(*p.Slug); err != nil {
			add("slug", "%v", err)
		}
	}
	if p.Branch != nil {
		if why := branchProblem(*p.Branch); why != "" {
			add("branch", "%s", why)
		}
	}
	if p.RootDirectory != nil && *p.RootDirectory != "" {
		if why := pathProblem(*p.RootDirectory); why != "" {
			add("root_directory", "%s", why)
		}
	}
	if p.DockerfilePath != nil {
		switch {
		case p.ClearDockerfilePath:
			add("dockerfile_path", "cannot be both set and cleared")
		case *p.DockerfilePath == "":
			add("dockerfile_path", "must not be empty; send null to detect how to build instead")
		default:
			if why := pathProblem(*p.DockerfilePath); why != "" {
				add("dockerfile_path", "%s", why)
			}
		}
	}
	between := func(field string, v *int32, lo, hi int32) {
		if v != nil && (*v < lo || *v > hi) {
			add(field, "must be between %d and %d, not %d", lo, hi, *v)
		}
	}
	between("port", p.Port, 1, 65535)
	between("replicas", p.Replicas, MinReplicas, MaxReplicas)
	between("cpu_millis", p.CPUMillis, MinCPUMillis, MaxCPUMillis)
	between("memory_mb", p.MemoryMB, MinMemoryMB, MaxMemoryMB)
	if p.HealthCheckPath != nil {
		h := *p.HealthCheckPath
		switch {
		case !strings.HasPrefix(h, "/"):
			add("health_check_path", "must start with /")
		case len(h) > MaxPath:
			add("health_check_path", "must have at most %d characters", MaxPath)
		case strings.IndexFunc(h, badInURL) >= 0:
			add("health_check_path", "must not contain spaces or control characters")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(bad, "; "))
	}
	return nil
}

func badInURL(r rune) bool { return r <= ' ' || r == 0x7f }

// parentRe is the schema's check on paths inside the repository
// (projects_root_directory_check, projects_dockerfile_path_check).
var parentRe = regexp.MustCompile(`(^/|(^|/)[.][.](/|$))`)

// pathProblem says why p cannot be a path inside the repository.
func pathProblem(p string) string {
	switch {
	case len(p) > MaxPath:
		return fmt.Sprintf("must have at most %d characters", MaxPath)
	case parentRe.MatchString(p):
		return "must be relative to the repository's root, without .. (e.g. apps/web)"
	case strings.ContainsRune(p, '\\'):
		return "must use / between directories"
	case strings.IndexFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		return "must not contain control characters"
	}
	return ""
}

// branchProblem is BranchProblem with a hint for the most likely mistake
// in a setting: a ref where a branch name goes.
func branchProblem(b string) string {
	if strings.HasPrefix(b, "refs/") {
		return "give the branch's name (main), not its ref (refs/heads/main)"
	}
	return BranchProblem(b)
}
