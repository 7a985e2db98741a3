package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/packages/database"
)

// Recorded is the cluster as its database remembers it.
type Recorded struct {
	// Pending are the migrations not applied yet; while there are any the
	// rest is not read (the tables may not exist).
	Pending      []string
	Nodes        []node.Node
	Operators    []db.Operator // those heard from recently
	Certificates []string      // storage keys of the certificates held
}

// operatorAlive is how recent an operator's heartbeat must be to count.
const operatorAlive = time.Minute

// errNotMigrated: the cluster's tables do not exist yet.
var errNotMigrated = errors.New("the database is not migrated")

// readRecorded reads what the database holds.
func readRecorded(ctx context.Context, pool *pgxpool.Pool) (Recorded, error) {
	pending, err := pendingMigrations(ctx, pool)
	if err != nil || len(pending) > 0 {
		return Recorded{Pending: pending}, err
	}
	return readCluster(ctx, pool)
}

// pendingMigrations are found by applying them in a transaction that is
// rolled back: the migration code is the only judge of its own history.
// On an empty database that builds the whole schema, so it is done once
// per step that needs it, not in every wait.
func pendingMigrations(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	ms, err := migration.Load(database.Migrations())
	if err != nil {
		return nil, err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolling back is the point
	res, err := migration.Apply(ctx, tx, ms, discard)
	if err != nil {
		return nil, fmt.Errorf("database migrations: %w", err)
	}
	return res.Applied, nil
}

// readCluster reads the recorded nodes, operators and certificates.
func readCluster(ctx context.Context, pool *pgxpool.Pool) (Recorded, error) {
	var r Recorded
	var err error
	if r.Nodes, err = (node.Store{DB: pool}).List(ctx); err != nil {
		return r, notMigrated(fmt.Errorf("read nodes: %w", err))
	}
	q := db.New(pool)
	if r.Operators, err = q.OperatorListAlive(ctx, time.Now().Add(-operatorAlive)); err != nil {
		return r, notMigrated(fmt.Errorf("read operators: %w", err))
	}
	if r.Certificates, err = q.CertificateListByPrefix(ctx, "certificates/"); err != nil {
		return r, notMigrated(fmt.Errorf("read certificates: %w", err))
	}
	return r, nil
}

func notMigrated(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return errNotMigrated
	}
	return err
}

// nodeAt is the recorded node with that internal address.
func (r Recorded) nodeAt(internal string) (node.Node, bool) {
	for _, n := range r.Nodes {
		if n.InternalAddress == internal {
			return n, true
		}
	}
	return node.Node{}, false
}

// missingCertificates are the names (d and *.d for each platform domain)
// with no certificate in storage from the ACME server at directory (the
// edges store each server's certificates apart, so a certificate of
// another, e.g. staging before production, does not count).
func missingCertificates(directory string, domains, keys []string) []string {
	var missing []string
	for _, d := range domains {
		for _, name := range []string{"*." + d, d} {
			if !slices.Contains(keys, certificateKey(directory, name)) {
				missing = append(missing, name)
			}
		}
	}
	return missing
}

// certificateKey is where the edges' certmagic (internal/certs) stores
// name's certificate from the ACME server at directory:
// certificates/<issuer key>/<safe name>/<safe name>.crt, a wildcard's
// safe name being wildcard_.<domain>.
func certificateKey(directory, name string) string {
	return certmagic.StorageKeys.SiteCert((&certmagic.ACMEIssuer{CA: directory}).IssuerKey(), name)
}

var discard = slog.New(slog.DiscardHandler)
