package certs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Rotation counts what a rotation of the certificates' values did.
type Rotation struct {
	Sealed  int      // sealed under the newest key now (plaintext ones included)
	Skipped int      // rewritten meanwhile (a renewal): left to the new value
	Failed  []string // storage keys whose value did not open; left as they are
	Batches int
}

// Rotate seals every stored value not yet sealed with keys' newest key,
// plaintext values from before sealing included, batchSize per
// transaction. Like project.RotateVariables it is resumable: committed
// batches are done, the rest still opens, and the next run finishes.
// afterBatch, when set, is called after each commit.
func Rotate(ctx context.Context, pool *pgxpool.Pool, keys *secret.Ring, batchSize int, afterBatch func(Rotation)) (Rotation, error) {
	var r Rotation
	prefix := SealedWith(keys.Current())
	after := ""
	for {
		var last string
		n := 0
		var batch Rotation // counted once its transaction commits
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			q := db.New(tx)
			rows, err := q.CertificateListNotSealedWith(ctx, db.CertificateListNotSealedWithParams{Prefix: prefix, After: after, MaxRows: int32(batchSize)})
			if err != nil {
				return err
			}
			n = len(rows)
			for _, row := range rows {
				last = row.Key
				plain, err := Open(keys, row.Key, row.Value)
				if err != nil {
					batch.Failed = append(batch.Failed, err.Error())
					continue
				}
				changed, err := q.CertificateReencrypt(ctx, db.CertificateReencryptParams{Key: row.Key, Value: Seal(keys, row.Key, plain), OldValue: row.Value})
				if err != nil {
					return err
				}
				if changed == 1 {
					batch.Sealed++
				} else {
					batch.Skipped++
				}
			}
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("rotate certificates: %w", err)
		}
		r.Sealed, r.Skipped, r.Failed = r.Sealed+batch.Sealed, r.Skipped+batch.Skipped, append(r.Failed, batch.Failed...)
		if n == 0 {
			return r, nil
		}
		r.Batches++
		after = last
		if afterBatch != nil {
			afterBatch(r)
		}
	}
}
