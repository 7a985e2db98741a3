package queue_test

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/packages/database"
)

var update = flag.Bool("update", false, "rewrite River's custom drizzle migration from the linked River")

// riverFile is the drizzle custom migration that carries River's schema.
const riverFile = "0001_river_queue.sql"

// TestRiverMigrationCurrent keeps the River migration in the drizzle chain
// equal to what the linked River renders, and says when a River upgrade
// needs a new migration.
func TestRiverMigrationCurrent(t *testing.T) {
	latest, err := queue.LatestRiverVersion()
	if err != nil {
		t.Fatal(err)
	}
	want, err := queue.MigrationSQL(1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		_, file, _, _ := runtime.Caller(0)
		path := filepath.Join(filepath.Dir(file), "..", "..", "packages", "database", "migrations", riverFile)
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := fs.ReadFile(database.Migrations(), riverFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want && !*update {
		t.Fatalf("%s differs from queue.MigrationSQL(1, 8); migrations must not change once applied — if River changed its old migrations, add a new one", riverFile)
	}
	if latest != 8 {
		t.Fatalf("linked River has migrations up to %d but the chain stops at 8: run `npx drizzle-kit generate --custom --name river_queue_%d` in packages/database and fill it with queue.MigrationSQL(9, %d)", latest, latest, latest)
	}
}

// TestRiverSeesSchemaCurrent checks, on a migrated database, that River's
// own migrator finds nothing to do: our chain left its tables and its
// bookkeeping exactly as rivermigrate would have.
func TestRiverSeesSchemaCurrent(t *testing.T) {
	pool := testdb.New(t)
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := m.Migrate(ctx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Versions) != 0 {
		var pending []string
		for _, v := range res.Versions {
			pending = append(pending, fmt.Sprint(v.Version))
		}
		t.Fatalf("River would still apply versions %s", strings.Join(pending, ", "))
	}
	v, err := m.Validate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK {
		t.Fatalf("River validation: %v", v.Messages)
	}
}
