// Package testdb gives each test its own freshly migrated Postgres database,
// copied from a template that is migrated once per schema version, so tests
// run in parallel (and across packages) without seeing each other's rows,
// queue jobs or notifications.
package testdb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
	"github.com/zeitwork/zeitwork/packages/database"
)

// New returns a pool on a new migrated database, dropped when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, NewURL(t))
}

// NewURL creates a new migrated database and returns its URL, for tests
// that hand the database to a subprocess or another role.
func NewURL(t testing.TB) string {
	t.Helper()
	admin := adminURL(t)
	tmpl, err := template(admin)
	if err != nil {
		t.Fatalf("testdb: migrated template: %v", err)
	}
	return create(t, admin, "TEMPLATE "+pgx.Identifier{tmpl}.Sanitize())
}

// Empty creates a new database with no schema at all and returns its URL.
func Empty(t testing.TB) string {
	t.Helper()
	return create(t, adminURL(t), "TEMPLATE template0")
}

// As returns dbURL (a database of New or NewURL) with a login user of its
// own that belongs to role's group only: the test sees the database with
// that role's grants, as the role does in production. The user is dropped
// when t ends.
func As(t testing.TB, dbURL string, role dbrole.Role) string {
	t.Helper()
	admin := adminURL(t)
	user := prefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + strings.ReplaceAll(id.New().String()[24:], "-", "") + "_" + string(role)
	password := strings.ReplaceAll(id.New().String(), "-", "")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	defer conn.Close(ctx)
	if err := dbrole.EnsureUser(ctx, conn, user, password, role); err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Errorf("testdb: drop user %s: %v", user, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{user}.Sanitize()); err != nil {
			t.Errorf("testdb: drop user %s: %v", user, err)
		}
	})
	u, err := dbrole.URL(dbURL, user, password)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return u
}

// Pool opens a pool on url, closed when t ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("testdb: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func adminURL(t testing.TB) string {
	t.Helper()
	u := testenv.Endpoints(t).Database.URL.Reveal()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := devenv.Postgres(ctx, u); err != nil {
		testenv.Unavailable(t, "Postgres", err)
	}
	return u
}

const prefix = "zw_test_"

// create makes a database named zw_test_<unix seconds>_<id>: the time lets
// a later run drop what a crashed run left behind.
func create(t testing.TB, admin, from string) string {
	t.Helper()
	ctx := context.Background()
	name := prefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + strings.ReplaceAll(id.New().String()[24:], "-", "")
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	defer conn.Close(ctx)
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" "+from)
		// Copying a template fails while another session is connected to
		// it, which is brief (another test's CREATE DATABASE): retry.
		if err == nil || attempt == 50 || !strings.Contains(err.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: drop %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

var (
	templateOnce sync.Map // admin URL -> *onceResult
)

type onceResult struct {
	once sync.Once
	name string
	err  error
}

// template returns the name of a database migrated to the current schema,
// creating it once per schema version. Other test binaries race to do the
// same, so creation happens under an advisory lock.
func template(admin string) (string, error) {
	v, _ := templateOnce.LoadOrStore(admin, &onceResult{})
	r := v.(*onceResult)
	r.once.Do(func() { r.name, r.err = buildTemplate(admin) })
	return r.name, r.err
}

func buildTemplate(admin string) (string, error) {
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range ms {
		h.Write([]byte(m.Hash))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	name := "zw_template_" + sum[:16]

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('zeitwork-testdb-template'))"); err != nil {
		return "", err
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtext('zeitwork-testdb-template'))") //nolint:errcheck

	dropStale(ctx, conn, name)

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()+" TEMPLATE template0"); err != nil {
		return "", err
	}
	tconn, err := pgx.Connect(ctx, withDatabase(admin, building))
	if err != nil {
		return "", err
	}
	_, err = migration.Apply(ctx, tconn, ms, zlog.Discard())
	tconn.Close(ctx)
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	// Renaming last means a template that exists is always complete.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return name, nil
}

// dropStale removes test databases older than two hours (left by killed
// runs) and all but the newest few templates. Templates of other schema
// versions are kept a while because another checkout's test run may be
// copying them right now.
func dropStale(ctx context.Context, conn *pgx.Conn, current string) {
	rows, err := conn.Query(ctx, `
		SELECT datname FROM pg_database WHERE datname LIKE 'zw\_test\_%'
		UNION ALL
		(SELECT datname FROM pg_database
		  WHERE datname LIKE 'zw\_template\_%' AND datname NOT LIKE $1 || '%'
		  ORDER BY oid DESC OFFSET 4)`, current)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-2 * time.Hour).Unix()
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			ts, _, _ := strings.Cut(strings.TrimPrefix(n, prefix), "_")
			if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || sec >= cutoff {
				continue
			}
		}
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)") //nolint:errcheck // best effort
	}
	// Login users of killed runs (As): roles outlive their databases.
	rows, err = conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'zw\_test\_%'`)
	if err != nil {
		return
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, u := range users {
		ts, _, _ := strings.Cut(strings.TrimPrefix(u, prefix), "_")
		if sec, err := strconv.ParseInt(ts, 10, 64); err == nil && sec < cutoff {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{u}.Sanitize()) //nolint:errcheck // best effort
		}
	}
}

func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err) // adminURL connected with it, so it parses
	}
	u.Path = "/" + name
	return u.String()
}

// Project inserts an organisation and a project in it (the rows most tests
// hang theirs off) and returns the project's id.
func Project(t testing.TB, pool *pgxpool.Pool) uuid.UUID {
	t.Helper()
	org, proj := id.New(), id.New()
	slug := "p" + strings.ReplaceAll(proj.String()[24:], "-", "")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Org')`, org, slug); err != nil {
		t.Fatalf("testdb: organisation: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO projects (id, organisation_id, slug, name) VALUES ($1, $2, $3, 'App')`, proj, org, slug); err != nil {
		t.Fatalf("testdb: project: %v", err)
	}
	return proj
}
