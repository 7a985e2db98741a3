package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
)

// Syncer keeps Routes equal to the database: it rebuilds the whole table
// when the database says a route may have changed (LISTEN zeitwork_routes)
// and on a timer underneath. When the database is away it keeps the last
// table, and it starts from the snapshot of it on disk.
type Syncer struct {
	Pool         *pgxpool.Pool
	Routes       *Routes
	AppsDomain   string
	SnapshotPath string // empty: no snapshot
	PollInterval time.Duration
	Metrics      *Metrics
	Log          *slog.Logger

	wake chan struct{}
}

// Restore loads the snapshot into Routes, if there is one; an edge that
// starts while the database is down serves what it last knew.
func (s *Syncer) Restore() error {
	if s.SnapshotPath == "" {
		return nil
	}
	t, err := LoadSnapshot(s.SnapshotPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	s.Routes.Store(t)
	s.Log.Info("routes restored from snapshot", "path", s.SnapshotPath, "hosts", t.Hosts())
	return nil
}

// Run syncs until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	s.wake = make(chan struct{}, 1)
	go s.listen(ctx)
	failures := 0
	for {
		err := s.Sync(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		next := s.PollInterval
		if err != nil {
			failures++
			// Back off, but not far: routes should come back soon after the database.
			next = min(time.Duration(failures)*500*time.Millisecond, s.PollInterval, 5*time.Second)
			if failures == 1 || failures%20 == 0 {
				s.Log.WarnContext(ctx, "route sync failed; serving the last table", "err", err, "failures", failures)
			}
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-time.After(next):
		}
	}
}

// Sync rebuilds the table from the database once and stores it.
func (s *Syncer) Sync(ctx context.Context) error {
	t, err := s.load(ctx)
	s.Metrics.tableUpdated(t, err)
	if err != nil {
		return err
	}
	s.Routes.Store(t)
	if s.SnapshotPath != "" {
		if err := SaveSnapshot(s.SnapshotPath, t); err != nil {
			s.Log.WarnContext(ctx, "route snapshot not saved", "err", err)
		}
	}
	return nil
}

// load reads projects, instances and domains in one snapshot of the
// database, so the table never mixes two moments (an activation half seen).
func (s *Syncer) load(ctx context.Context) (*Table, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tx, err := s.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	q := db.New(tx)
	projectRows, err := q.ProjectListRouted(ctx)
	if err != nil {
		return nil, fmt.Errorf("routes: projects: %w", err)
	}
	instanceRows, err := q.InstanceListRoutable(ctx)
	if err != nil {
		return nil, fmt.Errorf("routes: instances: %w", err)
	}
	domainRows, err := q.DomainListVerified(ctx)
	if err != nil {
		return nil, fmt.Errorf("routes: domains: %w", err)
	}
	projects := make([]Project, len(projectRows))
	for i, p := range projectRows {
		projects[i] = Project{ID: p.ID, Slug: p.Slug, ActiveDeploymentID: p.ActiveDeploymentID}
	}
	instances := make([]Instance, len(instanceRows))
	for i, in := range instanceRows {
		instances[i] = Instance{ProjectID: in.ProjectID, DeploymentID: in.DeploymentID, InstanceID: in.InstanceID, NodeProxy: in.NodeInternalAddress}
	}
	domains := make([]Domain, len(domainRows))
	for i, d := range domainRows {
		domains[i] = Domain{Name: d.Name, ProjectID: d.ProjectID}
	}
	return NewTable(s.AppsDomain, projects, instances, domains), nil
}

// listen wakes Run whenever the database notifies a route change; when the
// connection drops it reconnects, and polling covers the gap.
func (s *Syncer) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := func() error {
			pooled, err := s.Pool.Acquire(ctx)
			if err != nil {
				return err
			}
			// A LISTENing connection is ours alone until it closes.
			conn := pooled.Hijack()
			defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck
			if _, err := conn.Exec(ctx, "LISTEN zeitwork_routes"); err != nil {
				return err
			}
			s.poke() // anything missed while not listening
			for {
				if _, err := conn.WaitForNotification(ctx); err != nil {
					return err
				}
				s.poke()
			}
		}()
		if ctx.Err() == nil {
			s.Log.DebugContext(ctx, "listen for route changes", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// poke asks for a rebuild; rebuilds asked for while one runs fold into one.
func (s *Syncer) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
