package project

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Rotation counts what a key rotation did.
type Rotation struct {
	Rotated int // re-encrypted under the newest key now
	Skipped int // changed meanwhile (a member set a new value): left as it is
	// Failed names the rows that did not open with any key of the ring
	// (never their values); they stay as they are.
	Failed []string
	// Batches is how many transactions committed.
	Batches int
}

// RotateOptions tune a rotation.
type RotateOptions struct {
	// BatchSize is how many rows one transaction re-encrypts.
	BatchSize int
	// AfterBatch, when set, is called after each committed batch (tests
	// stop a rotation half-way with it).
	AfterBatch func(Rotation)
}

// RotateVariables re-encrypts every variable not under keys' newest key,
// a batch per transaction. It is resumable: a run that stops half-way
// (killed, cancelled) leaves every committed batch done and the rest under
// their old keys, which still decrypt, and the next run picks up what is
// left. Rows that do not open are counted, named and passed over.
func RotateVariables(ctx context.Context, pool *pgxpool.Pool, keys *secret.Ring, opts RotateOptions) (Rotation, error) {
	var r Rotation
	after := uuid.Nil
	for {
		var last uuid.UUID
		n := 0
		var batch Rotation // counted once its transaction commits
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			q := db.New(tx)
			rows, err := q.EnvironmentVariableListNotKey(ctx, db.EnvironmentVariableListNotKeyParams{KeyID: keys.Current(), After: after, MaxRows: int32(opts.BatchSize)})
			if err != nil {
				return err
			}
			n = len(rows)
			for _, v := range rows {
				last = v.ID
				ctxt := secret.EnvContext(v.ProjectID, v.Name)
				plain, err := keys.Open(v.ValueCiphertext, v.KeyID, ctxt)
				if err != nil {
					batch.Failed = append(batch.Failed, fmt.Sprintf("project %s variable %s: %v", v.ProjectID, v.Name, err))
					continue
				}
				ct, kid := keys.Seal(plain, ctxt)
				changed, err := q.EnvironmentVariableReencrypt(ctx, db.EnvironmentVariableReencryptParams{ID: v.ID, ValueCiphertext: ct, KeyID: kid, OldKeyID: v.KeyID})
				if err != nil {
					return err
				}
				if changed == 1 {
					batch.Rotated++
				} else {
					batch.Skipped++
				}
			}
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("rotate variables: %w", err)
		}
		r.Rotated, r.Skipped, r.Failed = r.Rotated+batch.Rotated, r.Skipped+batch.Skipped, append(r.Failed, batch.Failed...)
		if n == 0 {
			return r, nil
		}
		r.Batches++
		after = last
		if opts.AfterBatch != nil {
			opts.AfterBatch(r)
		}
	}
}
