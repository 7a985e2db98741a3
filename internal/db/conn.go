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
