package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/zlog"
	"github.com/zeitwork/zeitwork/packages/database"
)

func runMigrate(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (zeitwork migrate takes no flags; it reads DATABASE_URL)", err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q (zeitwork migrate reads DATABASE_URL)", fs.Arg(0))}
	}
	cfg, err := config.ParseFrom[config.Migrate](env.vars())
	if err != nil {
		return err
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "migrate")
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	res, err := migrate(ctx, cfg.Database.URL, log)
	if err != nil {
		return err
	}
	if len(res.Applied) == 0 {
		fmt.Fprintf(env.Stdout, "database is up to date (%d migrations)\n", res.Skipped)
		return nil
	}
	fmt.Fprintf(env.Stdout, "applied %d migrations (%s); %d were already applied\n",
		len(res.Applied), strings.Join(res.Applied, ", "), res.Skipped)
	return nil
}

// migrate applies the embedded migrations to the database at url.
func migrate(ctx context.Context, url config.PostgresURL, log *slog.Logger) (migration.Result, error) {
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		return migration.Result{}, err
	}
	conn, err := pgx.Connect(ctx, url.Reveal())
	if err != nil {
		return migration.Result{}, fmt.Errorf("cannot reach the database at %s: %w", url, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migration.Apply(ctx, conn, ms, log)
}
