package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Drizzle's defaults: `drizzle-kit migrate` writes here, so we do too.
const (
	journalSchema = "drizzle"
	journalTable  = "__drizzle_migrations"
)

// lockKey serialises concurrent appliers (three operators starting at once)
// on one transaction-scoped advisory lock: "zeitwork" in ASCII.
const lockKey int64 = 0x7a65697477_6f726b

var (
	// ErrForeignSchema: the database already holds objects the migrations
	// would create, but no record of having created them.
	ErrForeignSchema = errors.New("database holds a schema that Zeitwork did not create")
	// ErrHistoryMismatch: the recorded migrations are not a prefix of ours.
	ErrHistoryMismatch = errors.New("database migration history does not match this binary")
)

// Beginner starts a transaction; *pgx.Conn and *pgxpool.Pool both are one.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Result says what Apply did.
type Result struct {
	Applied []string // tags applied now, in order
	Skipped int      // migrations that were already applied
}

// Apply brings the database up to date with ms in a single transaction: on
// any error, nothing at all has changed.
func Apply(ctx context.Context, db Beginner, ms []Migration, log *slog.Logger) (Result, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
		return Result{}, fmt.Errorf("take migration lock: %w", err)
	}
	recorded, err := history(ctx, tx)
	if err != nil {
		return Result{}, err
	}
	pending, err := plan(ms, recorded)
	if err != nil {
		return Result{}, err
	}
	res := Result{Skipped: len(ms) - len(pending)}
	if len(pending) == 0 {
		return res, nil
	}
	if len(recorded) == 0 {
		if err := refuseForeign(ctx, tx, ms); err != nil {
			return Result{}, err
		}
	}
	if err := ensureJournal(ctx, tx); err != nil {
		return Result{}, err
	}
	for _, m := range pending {
		start := time.Now()
		for i, stmt := range m.Statements {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return Result{}, fmt.Errorf("migration %s, statement %d: %w", m.Tag, i+1, err)
			}
		}
		_, err := tx.Exec(ctx,
			`INSERT INTO "`+journalSchema+`"."`+journalTable+`" ("hash", "created_at") VALUES ($1, $2)`,
			m.Hash, m.When)
		if err != nil {
			return Result{}, fmt.Errorf("record migration %s: %w", m.Tag, err)
		}
		res.Applied = append(res.Applied, m.Tag)
		log.InfoContext(ctx, "migration applied", "tag", m.Tag, "duration", time.Since(start))
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, fmt.Errorf("commit migrations: %w", err)
	}
	return res, nil
}

type record struct {
	hash      string
	createdAt int64
}

// history reads drizzle's journal table, or nothing if there is none yet.
func history(ctx context.Context, tx pgx.Tx) ([]record, error) {
	var exists bool
	err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", journalSchema+"."+journalTable).Scan(&exists)
	if err != nil {
		return nil, fmt.Errorf("look for migration journal: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT hash, coalesce(created_at, 0) FROM "`+journalSchema+`"."`+journalTable+`" ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s.%s: %w", ErrHistoryMismatch, journalSchema, journalTable, err)
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (record, error) {
		var rec record
		return rec, r.Scan(&rec.hash, &rec.createdAt)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read %s.%s: %w", ErrHistoryMismatch, journalSchema, journalTable, err)
	}
	return recs, nil
}

// plan checks that the recorded history is exactly a prefix of ms and
// returns the rest. Drizzle itself only compares against the newest record;
// we are stricter, because a history that does not match means the database
// belongs to another version or another project.
func plan(ms []Migration, recorded []record) ([]Migration, error) {
	if len(recorded) > len(ms) {
		last := recorded[len(recorded)-1]
		return nil, fmt.Errorf("%w: the database records %d migrations, this binary has %d (newest recorded at %s); is the database newer than this zeitwork?",
			ErrHistoryMismatch, len(recorded), len(ms), time.UnixMilli(last.createdAt).UTC().Format(time.RFC3339))
	}
	for i, rec := range recorded {
		m := ms[i]
		if rec.createdAt != m.When {
			return nil, fmt.Errorf("%w: recorded migration %d has time %d, but %s has %d",
				ErrHistoryMismatch, i+1, rec.createdAt, m.Tag, m.When)
		}
		if rec.hash != m.Hash {
			return nil, fmt.Errorf("%w: migration %s was applied with different contents (hash %.12s, file %.12s); migrations must never be edited once applied",
				ErrHistoryMismatch, m.Tag, rec.hash, m.Hash)
		}
	}
	return ms[len(recorded):], nil
}

// refuseForeign stops a first migration from running into tables or types
// that are already there: they belong to something else, and running half
// our schema around them would leave a database nobody understands.
func refuseForeign(ctx context.Context, tx pgx.Tx, ms []Migration) error {
	names := Creates(ms)
	rows, err := tx.Query(ctx, `
		SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname || '.' || c.relname = ANY($1)
		UNION
		SELECT n.nspname || '.' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		 WHERE t.typrelid = 0 AND n.nspname || '.' || t.typname = ANY($1)
		ORDER BY 1`, names)
	if err != nil {
		return fmt.Errorf("look for conflicting objects: %w", err)
	}
	clash, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("look for conflicting objects: %w", err)
	}
	if len(clash) > 0 {
		return fmt.Errorf("%w: it already has %s, but no record of Zeitwork migrations (%s.%s); refusing to migrate — use an empty database",
			ErrForeignSchema, strings.Join(clash, ", "), journalSchema, journalTable)
	}
	return nil
}

// ensureJournal creates drizzle's journal exactly as drizzle does.
func ensureJournal(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS "`+journalSchema+`"`)
	if err == nil {
		_, err = tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS "`+journalSchema+`"."`+journalTable+`" (
			id SERIAL PRIMARY KEY,
			hash text NOT NULL,
			created_at bigint
		)`)
	}
	if err != nil {
		return fmt.Errorf("create migration journal: %w", err)
	}
	return nil
}
