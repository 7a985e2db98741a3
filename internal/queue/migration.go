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
	if from <= 2 && to >= 4 {
		rendered, err := enumFinalUpFront(b.String())
		if err != nil {
			return "", err
		}
		b.Reset()
		b.WriteString(rendered)
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

// River's version 4 adds 'pending' to river_job_state with ALTER TYPE ... ADD
// VALUE and uses it at once. River runs each version in its own transaction;
// drizzle (and so our applier) runs all pending migrations in one, and
// Postgres forbids using an enum value added in the same transaction. On a
// fresh database the enum is therefore created with its final values, in
// the order ADD VALUE ... AFTER 'discarded' would give; version 4's ADD VALUE
// IF NOT EXISTS then does nothing.
func enumFinalUpFront(sql string) (string, error) {
	const before = "  'discarded',\n  'retryable',"
	const after = "  'discarded',\n  'pending',\n  'retryable',"
	if strings.Count(sql, before) != 1 || !strings.Contains(sql, "ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded'") {
		return "", fmt.Errorf("river_job_state no longer looks as queue.MigrationSQL expects; re-check enumFinalUpFront against River's migrations")
	}
	return strings.Replace(sql, before, after, 1), nil
}
