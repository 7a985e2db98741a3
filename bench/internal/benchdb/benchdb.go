// Package benchdb gives a benchmark a database of its own on the local
// Postgres, migrated by the binary under test, so that its rows, queue
// tasks and notifications meet nothing else running on the machine.
package benchdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/id"
)

// Create makes the database zw_bench_<name>_<random> and migrates it with
// `bin migrate`; drop removes it, even when ctx has ended.
func Create(ctx context.Context, bin, adminURL, name string) (dbURL string, drop func(), err error) {
	db := "zw_bench_" + name + "_" + id.New().String()[30:]
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("admin database (scripts/deps.sh up?): %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		admin.Close(context.Background())
		return "", nil, fmt.Errorf("create database %s: %w", db, err)
	}
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench/%s: drop database %s: %v\n", name, db, err)
		}
		admin.Close(ctx)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + db
	dbURL = u.String()
	mig := exec.CommandContext(ctx, bin, "migrate")
	mig.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "LOG_LEVEL=warn")
	if out, err := mig.CombinedOutput(); err != nil {
		drop()
		return "", nil, fmt.Errorf("migrate %s: %v\n%s", db, err, out)
	}
	return dbURL, drop, nil
}
