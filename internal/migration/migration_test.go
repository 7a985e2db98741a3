package migration_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
	"github.com/zeitwork/zeitwork/packages/database"
)

func load(t *testing.T) []migration.Migration {
	t.Helper()
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 {
		t.Fatalf("want the schema and River's migrations, got %d", len(ms))
	}
	return ms
}

func TestLoadHashesLikeDrizzle(t *testing.T) {
	for _, m := range load(t) {
		body, err := fs.ReadFile(database.Migrations(), m.Tag+".sql")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		if m.Hash != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: hash %s is not sha256 of the file", m.Tag, m.Hash)
		}
		if strings.Join(m.Statements, "--> statement-breakpoint") != string(body) {
			t.Errorf("%s: statements do not rejoin to the file", m.Tag)
		}
	}
}

func TestCreatesListsTablesAndTypes(t *testing.T) {
	got := migration.Creates(load(t))
	for _, want := range []string{"public.users", "public.deployments", "public.instances", "public.river_job", "public.river_job_state"} {
		if !slices.Contains(got, want) {
			t.Errorf("Creates() lacks %s: %v", want, got)
		}
	}
}

func apply(t *testing.T, url string) migration.Result {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := migration.Apply(ctx, conn, load(t), zlog.Discard())
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

// drizzleMigrate runs drizzle's own applier, `npx drizzle-kit migrate`.
func drizzleMigrate(t *testing.T, url string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "packages", "database")
	bin := filepath.Join(dir, "node_modules", ".bin", "drizzle-kit")
	if _, err := os.Stat(bin); err != nil {
		testenv.Unavailable(t, "drizzle-kit (npm ci in packages/database)", err)
	}
	cmd := exec.Command(bin, "migrate")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("drizzle-kit migrate: %v\n%s", err, out)
	}
	return string(out)
}

// schema dumps everything but comments and session settings, which differ
// between dumps of identical databases.
func schema(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("pg_dump", "--schema-only", "--no-owner", "--no-privileges", url).Output()
	if err != nil {
		testenv.Unavailable(t, "pg_dump", err)
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "--") || strings.HasPrefix(line, "SET ") ||
			strings.HasPrefix(line, `\restrict`) || strings.HasPrefix(line, `\unrestrict`) ||
			strings.HasPrefix(line, "SELECT pg_catalog.set_config") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

func journal(t *testing.T, url string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT hash || ' ' || created_at FROM drizzle.__drizzle_migrations ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestAppliersAgree is the contract between `zeitwork migrate` and
// `drizzle-kit migrate`: each brings an empty database to the same schema
// and journal, re-running either is a no-op, and either order works.
func TestAppliersAgree(t *testing.T) {
	ms := load(t)
	goFirst, drizzleFirst := testdb.Empty(t), testdb.Empty(t)

	res := apply(t, goFirst)
	if len(res.Applied) != len(ms) || res.Skipped != 0 {
		t.Fatalf("first Go apply = %+v, want all %d applied", res, len(ms))
	}
	afterGo := schema(t, goFirst)
	if res := apply(t, goFirst); len(res.Applied) != 0 || res.Skipped != len(ms) {
		t.Fatalf("second Go apply = %+v, want a no-op", res)
	}
	drizzleMigrate(t, goFirst)
	if s := schema(t, goFirst); s != afterGo {
		t.Fatal("drizzle-kit migrate changed a database zeitwork migrate had brought up to date")
	}
	if n := len(journal(t, goFirst)); n != len(ms) {
		t.Fatalf("journal has %d rows after both appliers, want %d", n, len(ms))
	}

	drizzleMigrate(t, drizzleFirst)
	afterDrizzle := schema(t, drizzleFirst)
	drizzleMigrate(t, drizzleFirst)
	if res := apply(t, drizzleFirst); len(res.Applied) != 0 || res.Skipped != len(ms) {
		t.Fatalf("Go apply after drizzle = %+v, want a no-op", res)
	}
	if s := schema(t, drizzleFirst); s != afterDrizzle {
		t.Fatal("zeitwork migrate changed a database drizzle-kit had brought up to date")
	}

	if afterGo != afterDrizzle {
		t.Fatalf("the appliers produce different schemas:\n--- zeitwork migrate\n%s\n--- drizzle-kit migrate\n%s", afterGo, afterDrizzle)
	}
	if a, b := journal(t, goFirst), journal(t, drizzleFirst); !slices.Equal(a, b) {
		t.Fatalf("journals differ:\n%v\n%v", a, b)
	}
}

func TestForeignSchemaIsRefusedUntouched(t *testing.T) {
	url := testdb.Empty(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE users (login text PRIMARY KEY); CREATE TABLE unrelated (x int)`); err != nil {
		t.Fatal(err)
	}
	before := schema(t, url)

	_, err = migration.Apply(ctx, conn, load(t), zlog.Discard())
	if !errors.Is(err, migration.ErrForeignSchema) || !strings.Contains(err.Error(), "public.users") || strings.Contains(err.Error(), "unrelated") {
		t.Fatalf("err = %v, want ErrForeignSchema naming public.users only", err)
	}
	if after := schema(t, url); after != before {
		t.Fatalf("a refused migration changed the database:\n%s", after)
	}
}

func TestEditedMigrationIsRefused(t *testing.T) {
	url := testdb.Empty(t)
	apply(t, url)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	ms := load(t)
	edited := slices.Clone(ms)
	edited[0].Hash = strings.Repeat("0", 64)
	if _, err := migration.Apply(ctx, conn, edited, zlog.Discard()); !errors.Is(err, migration.ErrHistoryMismatch) || !strings.Contains(err.Error(), ms[0].Tag) {
		t.Fatalf("edited file: err = %v, want ErrHistoryMismatch naming %s", err, ms[0].Tag)
	}
	if _, err := migration.Apply(ctx, conn, ms[:1], zlog.Discard()); !errors.Is(err, migration.ErrHistoryMismatch) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("older binary: err = %v, want ErrHistoryMismatch saying the database is newer", err)
	}
}

func TestConcurrentAppliersApplyOnce(t *testing.T) {
	url := testdb.Empty(t)
	ms := load(t)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied int
	)
	for range 4 {
		wg.Go(func() {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(ctx)
			res, err := migration.Apply(ctx, conn, ms, zlog.Discard())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			applied += len(res.Applied)
			mu.Unlock()
		})
	}
	wg.Wait()
	if applied != len(ms) {
		t.Fatalf("%d migrations applied across 4 concurrent appliers, want %d in all", applied, len(ms))
	}
	if n := len(journal(t, url)); n != len(ms) {
		t.Fatalf("journal rows = %d, want %d", n, len(ms))
	}
}
