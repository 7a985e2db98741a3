package db_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	neturl "net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
	"github.com/zeitwork/zeitwork/packages/database"
)

// grants is the decision, table by table, of what each platform role's
// Postgres group may do (S select, I insert, U update, D delete; "" none),
// as the migrations grant it. A role gets a table when a query it runs
// reads or writes it (internal/db/queries, by the packages the role links);
// locking reads (FOR UPDATE) and upserts need U too.
var grants = map[string]map[dbrole.Role]string{
	"api_tokens":            {dbrole.API: "SIUD"},
	"build_logs":            {dbrole.API: "SIUD", dbrole.Builder: "SI"},
	"builds":                {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SU", dbrole.NodeAgent: "S"},
	"certificate_locks":     {dbrole.Edge: "SIUD"},
	"certificates":          {dbrole.Edge: "SIUD"},
	"deployments":           {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SU", dbrole.NodeAgent: "S", dbrole.Edge: "S"},
	"device_authorizations": {dbrole.API: "SIUD"},
	"domains":               {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Edge: "S"},
	"domain_claims":         {dbrole.API: "SIU", dbrole.Operator: "SIU"},
	"environment_variables": {dbrole.API: "SIUD", dbrole.Operator: "S", dbrole.NodeAgent: "S"},
	"github_installations":  {dbrole.API: "SIUD", dbrole.Builder: "S"},
	"images":                {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SIU", dbrole.NodeAgent: "S"},
	"instances":             {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.NodeAgent: "SIUD", dbrole.Edge: "S"},
	"nodes":                 {dbrole.API: "S", dbrole.Operator: "SU", dbrole.NodeAgent: "SIU", dbrole.Edge: "S"},
	"operators":             {dbrole.Operator: "SIUD"},
	"organisation_members":  {dbrole.API: "SIUD"},
	"organisations":         {dbrole.API: "SIUD"},
	"projects":              {dbrole.API: "SIUD", dbrole.Operator: "SU", dbrole.Builder: "S", dbrole.NodeAgent: "S", dbrole.Edge: "S"},
	"rate_limit_counters":   {dbrole.API: "SIUD"},
	"sessions":              {dbrole.API: "SIUD"},
	"users":                 {dbrole.API: "SIUD"},
	"waitlist":              {dbrole.API: "SIUD"},
	"webhook_deliveries":    {dbrole.API: "SIUD"},
	// River: the api enqueues; the operator and the builder enqueue and work.
	"river_job":          {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SIUD"},
	"river_leader":       {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SIUD"},
	"river_queue":        {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SIUD"},
	"river_notification": {dbrole.API: "SIUD", dbrole.Operator: "SIUD", dbrole.Builder: "SIUD"},
	"river_migration":    {dbrole.API: "S", dbrole.Operator: "S", dbrole.Builder: "S"},
}

var privileges = []struct {
	letter byte
	name   string
}{{'S', "SELECT"}, {'I', "INSERT"}, {'U', "UPDATE"}, {'D', "DELETE"}}

// TestEveryTableHasAGrantDecision: every table of the schema is in grants,
// and each role's group holds exactly what grants says — no more (a table
// opened to every role by mistake) and no less (a role that would fail at
// its first query). A migration that adds a table without deciding its
// grants fails here, in CI, not in production.
func TestEveryTableHasAGrantDecision(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 20 {
		t.Fatalf("only %d tables in the schema: %v", len(tables), tables)
	}
	for _, table := range tables {
		decided, ok := grants[table]
		if !ok {
			t.Errorf("table %s has no grant decision: GRANT what each role needs in a migration, and say so in grants", table)
			continue
		}
		for _, role := range dbrole.All {
			var held strings.Builder
			for _, p := range privileges {
				var has bool
				if err := pool.QueryRow(ctx, `SELECT has_table_privilege($1, $2, $3)`, role.Group(), "public."+table, p.name).Scan(&has); err != nil {
					t.Fatal(err)
				}
				if has {
					held.WriteByte(p.letter)
				}
			}
			if held.String() != decided[role] {
				t.Errorf("%s on %s: holds %q, decided %q", role.Group(), table, held.String(), decided[role])
			}
		}
	}
	for _, table := range slices.Sorted(maps.Keys(grants)) {
		if !slices.Contains(tables, table) {
			t.Errorf("grants decides for %s, which the schema does not have", table)
		}
	}
}

// TestRolesAreRefusedOtherRolesTables: a role's own login user, made as a
// deployment makes it, reads what its role needs and is refused the rest
// by Postgres itself — a stolen worker or edge credential does not read
// accounts, tokens or variables.
func TestRolesAreRefusedOtherRolesTables(t *testing.T) {
	t.Parallel()
	url := testdb.NewURL(t)
	pool := testdb.Pool(t, url)
	ctx := context.Background()
	// A row in every sensitive table, so that a refusal is not an empty read.
	testdb.Project(t, pool)
	if _, err := pool.Exec(ctx, `INSERT INTO users (id, github_user_id, username) VALUES (gen_random_uuid(), 1, 'u')`); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		role    dbrole.Role
		allowed []string
		refused []string
	}{
		{dbrole.NodeAgent,
			[]string{"SELECT id FROM instances", "SELECT id FROM nodes", "SELECT id FROM projects", "SELECT id FROM environment_variables"},
			[]string{"SELECT id FROM users", "SELECT id FROM api_tokens", "SELECT id FROM sessions", "SELECT id FROM github_installations",
				"SELECT key FROM certificates", "SELECT id FROM organisations", "SELECT id FROM river_job", "SELECT id FROM domains",
				"UPDATE projects SET name = 'x'", "DELETE FROM nodes", "INSERT INTO deployments (id) VALUES (gen_random_uuid())"}},
		{dbrole.Edge,
			[]string{"SELECT id FROM projects", "SELECT id FROM domains", "SELECT key FROM certificates"},
			[]string{"SELECT id FROM environment_variables", "SELECT id FROM users", "SELECT id FROM api_tokens", "SELECT id FROM sessions",
				"SELECT id FROM builds", "UPDATE instances SET restart_count = 0", "DELETE FROM domains"}},
		{dbrole.Builder,
			[]string{"SELECT id FROM builds", "SELECT id FROM github_installations", "SELECT id FROM river_job"},
			[]string{"SELECT id FROM environment_variables", "SELECT id FROM users", "SELECT id FROM api_tokens", "SELECT id FROM sessions",
				"SELECT id FROM instances", "SELECT key FROM certificates", "UPDATE projects SET name = 'x'"}},
		{dbrole.Operator,
			[]string{"SELECT id FROM instances", "SELECT id FROM nodes", "SELECT id FROM river_job", "SELECT id FROM environment_variables"},
			[]string{"SELECT id FROM users", "SELECT id FROM api_tokens", "SELECT id FROM sessions",
				"SELECT id FROM github_installations", "SELECT key FROM certificates", "SELECT id FROM organisations", "DELETE FROM projects"}},
		{dbrole.API,
			[]string{"SELECT id FROM users", "SELECT id FROM environment_variables", "SELECT id FROM river_job"},
			[]string{"SELECT key FROM certificates", "SELECT id FROM operators", "UPDATE nodes SET status = 'draining'"}},
	}
	for _, c := range cases {
		t.Run(string(c.role), func(t *testing.T) {
			conn, err := pgx.Connect(ctx, testdb.As(t, url, c.role))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			for _, q := range c.allowed {
				if _, err := conn.Exec(ctx, q); err != nil {
					t.Errorf("%s: %s: %v", c.role, q, err)
				}
			}
			for _, q := range c.refused {
				_, err := conn.Exec(ctx, q)
				var pg *pgconn.PgError
				if !errors.As(err, &pg) || pg.Code != "42501" { // insufficient_privilege
					t.Errorf("%s: %s: want permission denied, got %v", c.role, q, describe(err))
				}
			}
		})
	}
}

// TestMigrationsGrantWithoutCreateRole: where the migrating user may not
// create roles (a managed Postgres), a DBA creates the groups once and the
// migrations still apply, granting them.
func TestMigrationsGrantWithoutCreateRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testenv.Endpoints(t).Database.URL.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// Named like testdb's users, so that a killed run's is dropped later.
	owner := fmt.Sprintf("zw_test_%d_%s_owner", time.Now().Unix(), strings.ReplaceAll(id.New().String()[24:], "-", ""))
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{owner}.Sanitize()+" LOGIN NOCREATEROLE PASSWORD 'owner-pw'"); err != nil {
		t.Fatal(err)
	}
	// Dropped last: after its database (cleanups run in reverse).
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{owner}.Sanitize()) }) //nolint:errcheck
	url := testdb.Empty(t)
	u, _ := neturl.Parse(url)
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()+" OWNER TO "+pgx.Identifier{owner}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(owner, "owner-pw")
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migration.Apply(ctx, conn, ms, zlog.Discard()); err != nil {
		t.Fatalf("migrate as a user without CREATEROLE: %v", err)
	}
	var granted bool
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege('zeitwork_nodeagent', 'public.instances', 'SELECT')`).Scan(&granted); err != nil || !granted {
		t.Fatalf("zeitwork_nodeagent reads instances: %v, %v", granted, err)
	}
}

func describe(err error) string {
	if err == nil {
		return "success"
	}
	return fmt.Sprint(err)
}
