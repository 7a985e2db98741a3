package queue

import (
	"fmt"
	"strings"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// MigrationSQL renders River's schema migrations, versions from..to, as one
// drizzle custom migration (versions joined by drizzle's breakpoint marker),
// ending with the river_migration rows River's own migrator would have
// written, so that rivermigrate sees the schema as current.
//
// River's tables come into the database through the drizzle chain, not
// through rivermigrate, because there must be one ordered history that both
// appliers agree on. Upgrading River means a new custom migration rendered
// from the next versions; TestRiverMigrationCurrent says when that is due.
func MigrationSQL(from, to int) (string, error) {
	m, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- River queue schema, versions %d to %d, rendered by queue.MigrationSQL.\n", from, to)
	b.WriteString("-- Regenerate with: go test ./internal/queue -run TestRiverMigration -update\n")
	var versions []string
	for v := from; v <= to; v++ {
		mig, err := m.GetVersion(v)
		if err != nil {
			return "", err
		}
		// River marks where its schema name goes with a template comment;
		// with none, names resolve through search_path like drizzle's.
		sql := strings.ReplaceAll(mig.SQLUp, "/* TEMPLATE: schema */", "")
		fmt.Fprintf(&b, "-- River migration %03d: %s\n%s\n--> statement-breakpoint\n", v, mig.Name, strings.TrimSpace(sql))
		versions = append(versions, fmt.Sprintf("('main', %d)", v))
	}
	fmt.Fprintf(&b, "INSERT INTO river_migration (line, version) VALUES %s;\n", strings.Join(versions, ", "))
	return b.String(), nil
}

// LatestRiverVersion is the newest migration the linked River knows.
func LatestRiverVersion() (int, error) {
	m, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return 0, err
	}
	all := m.AllVersions()
	return all[len(all)-1].Version, nil
}
