package domains

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/zeitwork/zeitwork/internal/queue"
)

// Queue is the task queue domain checks go to. It is apart from the
// deploy queue so that slow DNS never holds up a deployment's worker slot.
const Queue = "domains"

// VerifyTask asks for one check of a pending domain, or a recheck of a
// verified one.
type VerifyTask struct {
	DomainID uuid.UUID `json:"domain_id"`
}

// Kind implements queue.Task.
func (VerifyTask) Kind() string { return "domain_verify" }

// InsertOpts make the task unique per domain while it waits or runs: the
// sweep may offer the same domain again and again without doubling work.
// Completed tasks do not count, so the next recheck can always be queued.
func (VerifyTask) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{
		ByArgs: true,
		ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateRetryable, rivertype.JobStateScheduled,
		},
	}}
}

// VerifyWorker does VerifyTasks. A check that finds no proof is done (the
// outcome is recorded on the domain); the sweep queues the next one when
// it is due. Only a check that could not run (the database away) is an
// error, retried by the queue with backoff.
type VerifyWorker struct {
	river.WorkerDefaults[VerifyTask]
	Domains *Service
}

// Timeout leaves the DNS lookups their time and the database some more.
func (w *VerifyWorker) Timeout(*queue.Job[VerifyTask]) time.Duration {
	return w.Domains.cfg.LookupTimeout + time.Minute
}

// Work implements queue.Worker.
func (w *VerifyWorker) Work(ctx context.Context, job *queue.Job[VerifyTask]) error {
	_, err := w.Domains.Check(ctx, job.Args.DomainID)
	if errors.Is(err, ErrNotFound) {
		return nil // removed since the task was queued
	}
	return err
}

// sweepBatch bounds one sweep; the rest are due at the next.
const sweepBatch = 500

// Sweep queues a check for every pending domain that is due one (see
// Config for when), and a recheck for every verified domain not checked
// for RecheckInterval, and returns how many were due. Run it every
// CheckInterval on every operator: the tasks are unique per domain, so
// sweeps that overlap queue each check once.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	st := newStore(s.pool)
	due, err := st.dueForCheck(ctx, s.cfg.CheckInterval, s.cfg.MaxCheckInterval, sweepBatch)
	if err != nil {
		return 0, fmt.Errorf("domain sweep: %w", err)
	}
	recheck, err := st.dueForRecheck(ctx, s.cfg.RecheckInterval, sweepBatch)
	if err != nil {
		return 0, fmt.Errorf("domain sweep: %w", err)
	}
	due = append(due, recheck...)
	for _, d := range due {
		if _, err := s.queue.Enqueue(ctx, VerifyTask{DomainID: d.ID}); err != nil {
			return 0, fmt.Errorf("domain sweep: %s: %w", d.Name, err)
		}
	}
	return len(due), nil
}
