package cli

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
)

// openDatabase connects a role to Postgres with the pool size its
// configuration asks for. Roles get the pool, never the URL, so that one
// place decides how the platform talks to its database.
func openDatabase(ctx context.Context, cfg config.Database) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL.Reveal())
	if err != nil {
		// pgx's parse errors may quote the URL; the redacted form is enough.
		return nil, fmt.Errorf("DATABASE_URL %s cannot be used", cfg.URL)
	}
	pc.MaxConns = cfg.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.URL, err)
	}
	return pool, nil
}

// withDatabase runs role with its own pool, closed when role returns.
func withDatabase(ctx context.Context, cfg config.Database, role func(*pgxpool.Pool) error) error {
	pool, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	return role(pool)
}
