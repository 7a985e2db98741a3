package db_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// Ids are UUIDv7s made by the application (internal/id), so a row inserted
// without one must be refused rather than given a random or serial id.
func TestIDsHaveNoDefault(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()

	// River's own tables use bigserial job ids by design; they are not ours.
	rows, err := pool.Query(ctx, `
		SELECT c.table_name, c.column_default IS NOT NULL OR c.is_identity = 'YES'
		FROM information_schema.columns c
		JOIN information_schema.tables t USING (table_schema, table_name)
		WHERE c.table_schema = 'public' AND c.column_name = 'id'
		  AND t.table_type = 'BASE TABLE' AND c.table_name NOT LIKE 'river\_%'
		ORDER BY c.table_name`)
	if err != nil {
		t.Fatal(err)
	}
	type idColumn struct {
		Table      string
		HasDefault bool
	}
	cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[idColumn])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range cols {
		seen[c.Table] = true
		if c.HasDefault {
			t.Errorf("%s.id has a default", c.Table)
		}
		_, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{c.Table}.Sanitize()+" DEFAULT VALUES")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != notNullViolation || pgErr.ColumnName != "id" {
			t.Errorf("INSERT INTO %s without id: err = %v, want not-null violation on id", c.Table, err)
		}
	}
	for _, table := range []string{"organisations", "projects", "deployments", "instances", "nodes", "domains", "webhook_deliveries"} {
		if !seen[table] {
			t.Errorf("table %s has no id column to check", table)
		}
	}
}

func TestInstanceAddressIsUniqueAcrossTheCluster(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := f.newNode(t, "10.0.0.2:7000", "fd00:0:0:2::/64", 4000, 8192)
	f.newInstance(t, "fd00:0:0:1::10")

	// Same address, another instance on another node.
	p := f.instanceParams("fd00:0:0:1::10")
	p.NodeID = other.ID
	_, err := f.q.InstanceCreate(context.Background(), p)
	wantViolation(t, err, uniqueViolation, "instances_ipv6_address_unique")

	if _, err := f.q.InstanceCreate(context.Background(), f.instanceParams("fd00:0:0:1::11")); err != nil {
		t.Fatalf("InstanceCreate with a free address: %v", err)
	}
}

func TestDomainNameIsVerifiedByOneProjectOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	other := f.newProject(t, "api")

	create := func(projectID uuid.UUID, name string) (db.Domain, error) {
		return f.q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: projectID, Name: name, VerificationToken: "token"})
	}
	a, err := create(f.project.ID, "app.example.com")
	if err != nil {
		t.Fatalf("DomainCreate on first project: %v", err)
	}
	// Pending on two projects is fine: whoever proves ownership first wins.
	// The query lowercases, so case cannot be used to slip past the index.
	b, err := create(other.ID, "App.Example.COM")
	if err != nil {
		t.Fatalf("DomainCreate of the same pending name on another project: %v", err)
	}
	if b.Name != a.Name {
		t.Fatalf("name = %q, want it lowercased to %q", b.Name, a.Name)
	}
	_, err = create(f.project.ID, "app.example.com")
	wantViolation(t, err, uniqueViolation, "domains_project_id_name_unique")

	if _, err := f.q.DomainSetVerified(ctx, a.ID); err != nil {
		t.Fatalf("DomainSetVerified on first project: %v", err)
	}
	_, err = f.q.DomainSetVerified(ctx, b.ID)
	wantViolation(t, err, uniqueViolation, "domains_name_verified_idx")

	owner, err := f.q.DomainGetVerifiedByName(ctx, "APP.example.com")
	if err != nil || owner.ProjectID != f.project.ID {
		t.Fatalf("DomainGetVerifiedByName = %v, %v; want the first project's domain", owner.ProjectID, err)
	}
}

// Every attempt here must be refused by the named constraint. The cases
// share one database: those that change a row's status get a row of their
// own, the rest only fail to change the fixture's.
func TestCheckConstraintsRefuseBadValues(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	instance := f.newInstance(t, "fd00:0:0:1::10")
	newBuild := func(t *testing.T) uuid.UUID {
		b, err := f.q.BuildCreate(ctx, db.BuildCreateParams{ID: id.New(), DeploymentID: f.newDeployment(t, f.project.ID).ID, Attempt: 1})
		if err != nil {
			t.Fatalf("BuildCreate: %v", err)
		}
		return b.ID
	}
	delivery, err := f.q.WebhookDeliveryInsert(ctx, db.WebhookDeliveryInsertParams{
		ID: id.New(), DeliveryID: "d-1", Event: "push", PayloadSha256: strings.Repeat("a", 64),
	})
	if err != nil {
		t.Fatalf("WebhookDeliveryInsert: %v", err)
	}
	domain, err := f.q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: f.project.ID, Name: "app.example.com", VerificationToken: "token"})
	if err != nil {
		t.Fatalf("DomainCreate: %v", err)
	}
	anyStatus := []string{"queued", "building", "deploying", "active", "retiring", "stopped", "failed"}

	tests := []struct {
		name       string
		constraint string
		attempt    func(t *testing.T) error
	}{
		{"unknown deployment status", "deployments_status_check", func(t *testing.T) error {
			_, err := f.q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: f.newDeployment(t, f.project.ID).ID, Status: "paused", FromStatuses: anyStatus})
			return err
		}},
		{"failed deployment without reason", "deployments_failure_reason_check", func(t *testing.T) error {
			_, err := f.q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: f.newDeployment(t, f.project.ID).ID, Status: "failed", FromStatuses: anyStatus})
			return err
		}},
		{"retiring deployment without stop_at", "deployments_stop_at_check", func(t *testing.T) error {
			_, err := f.q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: f.newDeployment(t, f.project.ID).ID, Status: "retiring", FromStatuses: anyStatus})
			return err
		}},
		{"deployment with two replicas", "deployments_replicas_check", func(t *testing.T) error {
			p := deploymentParams(f.project.ID)
			p.Replicas = 2
			_, err := f.q.DeploymentCreate(ctx, p)
			return err
		}},
		{"github deployment without commit", "deployments_source_check", func(t *testing.T) error {
			p := deploymentParams(f.project.ID)
			p.GithubCommitSha = nil
			_, err := f.q.DeploymentCreate(ctx, p)
			return err
		}},
		{"unknown instance state", "instances_state_check", func(t *testing.T) error {
			_, err := f.q.InstanceSetState(ctx, db.InstanceSetStateParams{ID: instance.ID, State: "crashed"})
			return err
		}},
		{"unknown instance desired state", "instances_desired_state_check", func(t *testing.T) error {
			_, err := f.q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: instance.ID, DesiredState: "paused"})
			return err
		}},
		{"unknown node status", "nodes_status_check", func(t *testing.T) error {
			_, err := f.q.NodeSetStatus(ctx, db.NodeSetStatusParams{ID: f.node.ID, Status: "offline"})
			return err
		}},
		{"node without cpu", "nodes_cpu_millis_check", func(t *testing.T) error {
			_, err := f.q.NodeRegister(ctx, nodeParams("10.0.0.9:7000", "fd00:0:0:9::/64", 0, 1024))
			return err
		}},
		{"negative free cpu on a node", "nodes_free_cpu_millis_check", func(t *testing.T) error {
			// No query can do this (NodeAllocate checks first): the constraint is the backstop.
			_, err := f.pool.Exec(ctx, "UPDATE nodes SET free_cpu_millis = -1 WHERE id = $1", f.node.ID)
			return err
		}},
		{"unknown build status", "builds_status_check", func(t *testing.T) error {
			_, err := f.q.BuildFinish(ctx, db.BuildFinishParams{ID: newBuild(t), Status: "done"})
			return err
		}},
		{"failed build without reason", "builds_failure_reason_check", func(t *testing.T) error {
			_, err := f.q.BuildFinish(ctx, db.BuildFinishParams{ID: newBuild(t), Status: "failed"})
			return err
		}},
		{"project with two replicas", "projects_replicas_check", func(t *testing.T) error {
			p := projectParams(f.org.ID, "small")
			p.Replicas = 2
			_, err := f.q.ProjectCreate(ctx, p)
			return err
		}},
		{"project slug with upper case", "projects_slug_check", func(t *testing.T) error {
			_, err := f.q.ProjectCreate(ctx, projectParams(f.org.ID, "MyApp"))
			return err
		}},
		{"project slug shaped like a deployment id", "projects_slug_not_uuid_check", func(t *testing.T) error {
			_, err := f.q.ProjectCreate(ctx, projectParams(f.org.ID, "0190f3a27b1c7def8123456789abcdef"))
			return err
		}},
		{"session token hash of the wrong length", "sessions_token_hash_check", func(t *testing.T) error {
			u, err := f.q.UserCreate(ctx, db.UserCreateParams{ID: id.New(), GithubUserID: 990001, Username: "hash-test"})
			if err != nil {
				return err
			}
			_, err = f.q.SessionCreate(ctx, db.SessionCreateParams{ID: id.New(), UserID: u.ID, TokenHash: []byte("short"), ExpiresAt: time.Now()})
			return err
		}},
		{"project root directory escaping the repository", "projects_root_directory_check", func(t *testing.T) error {
			p := projectParams(f.org.ID, "escape")
			p.RootDirectory = "app/../../etc"
			_, err := f.q.ProjectCreate(ctx, p)
			return err
		}},
		{"organisation slug with upper case", "organisations_slug_check", func(t *testing.T) error {
			_, err := f.q.OrganisationCreate(ctx, db.OrganisationCreateParams{ID: id.New(), Slug: "Acme-2", Name: "x"})
			return err
		}},
		{"environment variable name", "environment_variables_name_check", func(t *testing.T) error {
			_, err := f.q.EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{
				ID: id.New(), ProjectID: f.project.ID, Name: "1-BAD", ValueCiphertext: []byte("x"), KeyID: "k1",
			})
			return err
		}},
		{"image digest that is a tag", "images_digest_check", func(t *testing.T) error {
			_, err := f.q.ImageUpsert(ctx, db.ImageUpsertParams{ID: id.New(), ProjectID: f.project.ID, Repository: "r", Tag: "t", Digest: "latest"})
			return err
		}},
		{"failed webhook delivery without error", "webhook_deliveries_failed_check", func(t *testing.T) error {
			_, err := f.q.WebhookDeliverySetStatus(ctx, db.WebhookDeliverySetStatusParams{ID: delivery.ID, Status: "failed"})
			return err
		}},
		{"domain name that is not a host name", "domains_name_check", func(t *testing.T) error {
			_, err := f.q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: f.project.ID, Name: "localhost", VerificationToken: "t"})
			return err
		}},
		{"verified domain without verified_at", "domains_verified_at_check", func(t *testing.T) error {
			_, err := f.q.DomainSetCheckFailed(ctx, db.DomainSetCheckFailedParams{ID: domain.ID, Status: "verified", FailureReason: ptr("x")})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantViolation(t, tt.attempt(t), checkViolation, tt.constraint)
		})
	}
}

func TestInstanceNeedsAKnownDeployment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.instanceParams("fd00:0:0:1::10")
	p.DeploymentID = id.New()
	_, err := f.q.InstanceCreate(context.Background(), p)
	wantViolation(t, err, foreignKeyViolation, "instances_deployment_id_deployments_id_fk")
}

func TestProjectDeleteCascades(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	domain, err := f.q.DomainCreate(ctx, db.DomainCreateParams{ID: id.New(), ProjectID: f.project.ID, Name: "app.example.com", VerificationToken: "t"})
	if err != nil {
		t.Fatalf("DomainCreate: %v", err)
	}
	if _, err := f.q.EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{
		ID: id.New(), ProjectID: f.project.ID, Name: "DATABASE_URL", ValueCiphertext: []byte("x"), KeyID: "k1",
	}); err != nil {
		t.Fatalf("EnvironmentVariableUpsert: %v", err)
	}
	if _, err := f.q.DeploymentSetImage(ctx, db.DeploymentSetImageParams{ID: f.deployment.ID, ImageID: f.image.ID}); err != nil {
		t.Fatalf("DeploymentSetImage: %v", err)
	}
	if _, err := f.q.ProjectSetActiveDeployment(ctx, db.ProjectSetActiveDeploymentParams{ID: f.project.ID, ActiveDeploymentID: &f.deployment.ID}); err != nil {
		t.Fatalf("ProjectSetActiveDeployment: %v", err)
	}

	// An instance still on record holds the project (ON DELETE RESTRICT): the
	// node agent must have stopped it and the row must be gone first.
	instance := f.newInstance(t, "fd00:0:0:1::10")
	_, err = f.q.ProjectDelete(ctx, f.project.ID)
	wantViolation(t, err, foreignKeyViolation, "instances_deployment_id_deployments_id_fk")
	if _, err := f.q.InstanceSetDesiredState(ctx, db.InstanceSetDesiredStateParams{ID: instance.ID, DesiredState: "stopped"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.q.InstanceSetState(ctx, db.InstanceSetStateParams{ID: instance.ID, State: "stopped"}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.q.InstanceDelete(ctx, instance.ID); err != nil || n != 1 {
		t.Fatalf("InstanceDelete = %d, %v", n, err)
	}

	if n, err := f.q.ProjectDelete(ctx, f.project.ID); err != nil || n != 1 {
		t.Fatalf("ProjectDelete = %d, %v", n, err)
	}
	vars, err := f.q.EnvironmentVariableListByProject(ctx, f.project.ID)
	if err != nil || len(vars) != 0 {
		t.Errorf("variables after ProjectDelete = %v, %v; want none", vars, err)
	}
	if _, err := f.q.DomainGetByID(ctx, domain.ID); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("DomainGetByID after ProjectDelete: err = %v, want pgx.ErrNoRows", err)
	}
	if _, err := f.q.DeploymentGetByID(ctx, f.deployment.ID); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("DeploymentGetByID after ProjectDelete: err = %v, want pgx.ErrNoRows", err)
	}
	if _, err := f.q.ImageGetByID(ctx, f.image.ID); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("ImageGetByID after ProjectDelete: err = %v, want pgx.ErrNoRows", err)
	}
}

func TestForeignKeysRefuseDanglingReferences(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	other := f.newProject(t, "api")
	otherDeployment := f.newDeployment(t, other.ID)

	t.Run("organisation with projects", func(t *testing.T) {
		_, err := f.q.OrganisationDelete(ctx, f.org.ID)
		wantViolation(t, err, foreignKeyViolation, "projects_organisation_id_organisations_id_fk")
	})
	t.Run("active deployment of another project", func(t *testing.T) {
		_, err := f.q.ProjectSetActiveDeployment(ctx, db.ProjectSetActiveDeploymentParams{ID: f.project.ID, ActiveDeploymentID: &otherDeployment.ID})
		wantViolation(t, err, foreignKeyViolation, "projects_active_deployment_fk")
	})
	t.Run("image a deployment runs", func(t *testing.T) {
		if _, err := f.q.DeploymentSetImage(ctx, db.DeploymentSetImageParams{ID: f.deployment.ID, ImageID: f.image.ID}); err != nil {
			t.Fatal(err)
		}
		_, err := f.q.ImageDelete(ctx, f.image.ID)
		wantViolation(t, err, foreignKeyViolation, "deployments_image_id_images_id_fk")
	})
}

// The partial unique index deployments_project_id_active_idx: a second
// deployment of a project can only become active once the first is retired.
func TestOneActiveDeploymentPerProject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	activate := func(q *db.Queries, deploymentID uuid.UUID) error {
		_, err := q.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{ID: deploymentID, Status: "active", FromStatuses: []string{"queued"}})
		return err
	}
	if err := activate(f.q, f.deployment.ID); err != nil {
		t.Fatalf("first deployment to active: %v", err)
	}
	second := f.newDeployment(t, f.project.ID)
	wantViolation(t, activate(f.q, second.ID), uniqueViolation, "deployments_project_id_active_idx")

	// Another project is not affected.
	other := f.newProject(t, "api")
	if err := activate(f.q, f.newDeployment(t, other.ID).ID); err != nil {
		t.Fatalf("other project's deployment to active: %v", err)
	}

	// The documented handover: retire the old one in the same transaction.
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	qtx := f.q.WithTx(tx)
	if _, err := qtx.DeploymentSetStatus(ctx, db.DeploymentSetStatusParams{
		ID: f.deployment.ID, Status: "retiring", StopAt: ptr(time.Now().Add(time.Minute)), FromStatuses: []string{"active"},
	}); err != nil {
		t.Fatalf("retire first deployment: %v", err)
	}
	if err := activate(qtx, second.ID); err != nil {
		t.Fatalf("second deployment to active after retiring the first: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := f.q.DeploymentGetActiveByProject(ctx, f.project.ID)
	if err != nil || got.ID != second.ID {
		t.Fatalf("DeploymentGetActiveByProject = %v, %v; want %v", got.ID, err, second.ID)
	}
}

func TestNodePrefixIsOneUniqueSlash64(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()

	_, err := f.q.NodeRegister(ctx, nodeParams("10.0.0.2:7000", "fd00:0:0:1::/64", 1000, 1024))
	wantViolation(t, err, uniqueViolation, "nodes_ipv6_prefix_unique")

	_, err = f.q.NodeRegister(ctx, nodeParams("10.0.0.3:7000", "fd00:0:1::/48", 1000, 1024))
	wantViolation(t, err, checkViolation, "nodes_ipv6_prefix_check")

	// A known node re-registering keeps its id and its /64, whatever it proposes.
	again := nodeParams(f.node.InternalAddress, "fd00:0:0:7::/64", f.node.CpuMillis, f.node.MemoryMb)
	n, err := f.q.NodeRegister(ctx, again)
	if err != nil {
		t.Fatalf("NodeRegister again: %v", err)
	}
	if n.ID != f.node.ID || n.Ipv6Prefix != netip.MustParsePrefix("fd00:0:0:1::/64") {
		t.Fatalf("re-registered node = %v %v, want %v %v", n.ID, n.Ipv6Prefix, f.node.ID, f.node.Ipv6Prefix)
	}
}
