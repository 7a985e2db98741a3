package db_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// SQLSTATEs the schema answers with when it refuses a row.
const (
	notNullViolation    = "23502"
	foreignKeyViolation = "23503"
	uniqueViolation     = "23505"
	checkViolation      = "23514"
)

// fixture is one migrated database holding an organisation, a project with
// a queued deployment, an image of it, and an active node: enough to hang
// any other row on.
type fixture struct {
	pool       *pgxpool.Pool
	q          *db.Queries
	org        db.Organisation
	project    db.Project
	deployment db.Deployment
	image      db.Image
	node       db.Node
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := testdb.New(t)
	f := &fixture{pool: pool, q: db.New(pool)}
	ctx := context.Background()
	var err error
	if f.org, err = f.q.OrganisationCreate(ctx, db.OrganisationCreateParams{ID: id.New(), Slug: "acme", Name: "Acme"}); err != nil {
		t.Fatalf("OrganisationCreate: %v", err)
	}
	f.project = f.newProject(t, "web")
	f.deployment = f.newDeployment(t, f.project.ID)
	f.image = f.newImage(t, f.project.ID, "v1")
	f.node = f.newNode(t, "10.0.0.1:7000", "fd00:0:0:1::/64", 4000, 8192)
	return f
}

func projectParams(orgID uuid.UUID, slug string) db.ProjectCreateParams {
	return db.ProjectCreateParams{
		ID: id.New(), OrganisationID: orgID, Slug: slug, Name: slug,
		Branch: "main", Port: 8080, Replicas: 3, CpuMillis: 500, MemoryMb: 256, HealthCheckPath: "/",
	}
}

func (f *fixture) newProject(t *testing.T, slug string) db.Project {
	t.Helper()
	p, err := f.q.ProjectCreate(context.Background(), projectParams(f.org.ID, slug))
	if err != nil {
		t.Fatalf("ProjectCreate(%s): %v", slug, err)
	}
	return p
}

func deploymentParams(projectID uuid.UUID) db.DeploymentCreateParams {
	sha := "0123456789abcdef0123456789abcdef01234567"
	return db.DeploymentCreateParams{ID: id.New(), ProjectID: projectID, SourceType: "github", GithubCommitSha: &sha, Replicas: 3, Environment: "production"}
}

func (f *fixture) newDeployment(t *testing.T, projectID uuid.UUID) db.Deployment {
	t.Helper()
	d, err := f.q.DeploymentCreate(context.Background(), deploymentParams(projectID))
	if err != nil {
		t.Fatalf("DeploymentCreate: %v", err)
	}
	return d
}

func (f *fixture) newImage(t *testing.T, projectID uuid.UUID, tag string) db.Image {
	t.Helper()
	img, err := f.q.ImageUpsert(context.Background(), db.ImageUpsertParams{
		ID: id.New(), ProjectID: projectID, Repository: "registry.local/" + projectID.String(), Tag: tag,
		Digest: "sha256:" + strings.Repeat("ab", 32),
	})
	if err != nil {
		t.Fatalf("ImageUpsert: %v", err)
	}
	return img
}

func nodeParams(addr, prefix string, cpu, mem int32) db.NodeRegisterParams {
	return db.NodeRegisterParams{
		ID: id.New(), Hostname: "node-" + addr, InternalAddress: addr, Labels: []byte(`{}`),
		CpuMillis: cpu, MemoryMb: mem, Ipv6Prefix: netip.MustParsePrefix(prefix), AgentVersion: "test",
	}
}

func (f *fixture) newNode(t *testing.T, addr, prefix string, cpu, mem int32) db.Node {
	t.Helper()
	n, err := f.q.NodeRegister(context.Background(), nodeParams(addr, prefix, cpu, mem))
	if err != nil {
		t.Fatalf("NodeRegister(%s): %v", addr, err)
	}
	return n
}

func (f *fixture) instanceParams(addr string) db.InstanceCreateParams {
	return db.InstanceCreateParams{
		ID: id.New(), DeploymentID: f.deployment.ID, NodeID: f.node.ID, ImageID: f.image.ID,
		Ipv6Address: netip.MustParseAddr(addr), Port: 8080, CpuMillis: 500, MemoryMb: 256,
	}
}

func (f *fixture) newInstance(t *testing.T, addr string) db.Instance {
	t.Helper()
	in, err := f.q.InstanceCreate(context.Background(), f.instanceParams(addr))
	if err != nil {
		t.Fatalf("InstanceCreate(%s): %v", addr, err)
	}
	return in
}

// wantViolation fails t unless err is Postgres refusing the row with code
// on constraint, so that a test cannot pass on some unrelated error.
func wantViolation(t *testing.T, err error, code, constraint string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("err = %v, want SQLSTATE %s on %s", err, code, constraint)
	}
	if pgErr.Code != code || pgErr.ConstraintName != constraint {
		t.Fatalf("got SQLSTATE %s on %q (%s), want %s on %q", pgErr.Code, pgErr.ConstraintName, pgErr.Message, code, constraint)
	}
}

func ptr[T any](v T) *T { return &v }
