// Package db is the database access sqlc generates from the queries in
// internal/db/queries (one file per table) against the drizzle migrations.
// Its row types are storage, not domain types: a domain package (instance,
// node, deployment, build, domains, ...) converts them at its store, where
// pgx.ErrNoRows also ends. Only conn.go is written by hand.
package db

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Conn is a pool or a transaction: what the domain stores run their
// queries on. A store given a transaction takes part in it, and its own
// transactions become savepoints.
type Conn interface {
	DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}
