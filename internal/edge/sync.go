package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/pgnotify"
)

// Syncer keeps Routes equal to the database. The database names the
// project whose routes changed (LISTEN zeitwork_routes), and the syncer
// rebuilds just that project's names; a change it cannot pin on one
// project, a reconnect, and a timer underneath rebuild everything. When
// the database is away it keeps the last table, and it starts from the
// snapshot of it on disk.
type Syncer struct {
	Pool         *pgxpool.Pool
	Routes       *Routes
	AppsDomain   string
	SnapshotPath string // empty: no snapshot
	PollInterval time.Duration
	Metrics      *Metrics
	Log          *slog.Logger

	wake     chan struct{}
	mu       sync.Mutex
	pending  map[uuid.UUID]struct{} // projects to rebuild
	all      bool                   // rebuild everything
	snapshot chan *Table
}

// maxPartial is how many changed projects one partial rebuild takes on;
// beyond it a full rebuild is cheaper than the per-project queries.
const maxPartial = 500

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
	s.init()
	go s.listen(ctx)
	if s.SnapshotPath != "" {
		go s.writeSnapshots(ctx)
	}
	s.changed("") // the first table
	failures := 0
	for {
		var retry <-chan time.Time
		changed, all := s.take()
		var err error
		if all {
			err = s.Sync(ctx)
		} else if len(changed) > 0 {
			err = s.syncProjects(ctx, changed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			s.requeue(changed, all)
			failures++
			// Back off, but not far: routes should come back soon after the database.
			retry = time.After(min(time.Duration(failures)*500*time.Millisecond, s.PollInterval, 5*time.Second))
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
		case <-retry:
		}
	}
}

func (s *Syncer) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
		s.pending = map[uuid.UUID]struct{}{}
		s.snapshot = make(chan *Table, 1)
	}
}

// Sync rebuilds the whole table from the database once and stores it.
func (s *Syncer) Sync(ctx context.Context) error {
	s.init()
	t, err := s.load(ctx, nil)
	s.Metrics.tableUpdated(t, err)
	if err != nil {
		return err
	}
	s.Routes.Store(t)
	s.save(t)
	// A full rebuild at scale allocates several times the table (the
	// rows as they stream in, the new table beside the old one), and the
	// heap it grew to would stay resident until the next collection, which
	// an idle edge may not reach for two minutes. Give it back now: at 100,000
	// projects that took the edge from about 210 to under 100 MiB resident,
	// for one collection of a heap of tens of MiB every poll interval.
	debug.FreeOSMemory()
	return nil
}

// syncProjects rebuilds the names of the given projects only.
func (s *Syncer) syncProjects(ctx context.Context, projects []uuid.UUID) error {
	fresh, err := s.load(ctx, projects)
	if err != nil {
		s.Metrics.tableUpdated(nil, err)
		return err
	}
	t := s.Routes.Load().Update(projects, fresh)
	s.Routes.StoreUpdate(t, fresh)
	s.Metrics.tableUpdated(t, nil)
	s.save(t)
	if t.Conflicts() > 0 {
		// A name another project still holds here: the database says
		// who owns it, through a full rebuild.
		s.Log.InfoContext(ctx, "route update left names with their previous project; rebuilding all routes", "names", t.Conflicts())
		s.changed("")
	}
	return nil
}

// load reads projects, instances and domains (all, or of the given
// projects) in one snapshot of the database, so a table never mixes two
// moments (an activation half seen).
func (s *Syncer) load(ctx context.Context, only []uuid.UUID) (*Table, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tx, err := s.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	q := db.New(tx)
	// The partial queries return the full ones' rows, filtered by project.
	var projects []Project
	if only == nil {
		// Sized from the table it replaces: no copies as it grows.
		projects = make([]Project, 0, s.Routes.Load().Hosts()/2+16)
		if err := q.ProjectListRoutedEach(ctx, func(p *db.ProjectListRoutedRow) {
			projects = append(projects, Project{ID: p.ID, Slug: p.Slug, ActiveDeploymentID: p.ActiveDeploymentID})
		}); err != nil {
			return nil, fmt.Errorf("routes: projects: %w", err)
		}
	} else {
		rows, err := q.ProjectListRoutedByIDs(ctx, only)
		if err != nil {
			return nil, fmt.Errorf("routes: projects: %w", err)
		}
		projects = make([]Project, len(rows))
		for i, p := range rows {
			projects[i] = Project{ID: p.ID, Slug: p.Slug, ActiveDeploymentID: p.ActiveDeploymentID}
		}
	}
	b := newBuilder(s.AppsDomain, len(projects))
	var domainRows []db.Domain
	if only == nil {
		// Streamed into the table as they arrive: held as rows, the
		// instances would be 20 MiB more at the peak of every rebuild at
		// 100,000 projects.
		if err := q.InstanceListRoutableEach(ctx, func(in *db.InstanceListRoutableRow) {
			b.instance(in.ProjectID, in.DeploymentID, in.InstanceID, in.NodeInternalAddress)
		}); err != nil {
			return nil, fmt.Errorf("routes: instances: %w", err)
		}
		if domainRows, err = q.DomainListVerified(ctx); err != nil {
			return nil, fmt.Errorf("routes: domains: %w", err)
		}
	} else {
		rows, err := q.InstanceListRoutableByProjects(ctx, only)
		if err != nil {
			return nil, fmt.Errorf("routes: instances: %w", err)
		}
		for _, in := range rows {
			b.instance(in.ProjectID, in.DeploymentID, in.InstanceID, in.NodeInternalAddress)
		}
		if domainRows, err = q.DomainListVerifiedByProjects(ctx, only); err != nil {
			return nil, fmt.Errorf("routes: domains: %w", err)
		}
	}
	domains := make([]Domain, len(domainRows))
	for i, d := range domainRows {
		domains[i] = Domain{Name: d.Name, ProjectID: d.ProjectID}
	}
	return b.finish(projects, domains), nil
}

// listen records what the database says changed and wakes Run. A
// reconnect, or the poll interval passing, asks for a full rebuild: changes
// may have gone unnotified.
func (s *Syncer) listen(ctx context.Context) {
	l := &pgnotify.Listener{Pool: s.Pool, Channels: []string{"zeitwork_routes"}, Poll: s.PollInterval, Log: s.Log}
	l.Run(ctx, func(e pgnotify.Event) { //nolint:errcheck // it ends with ctx
		if e.Missed() {
			s.changed("")
		} else {
			s.changed(e.Payload)
		}
	})
}

// changed notes a notification: a project id, or anything else for all.
func (s *Syncer) changed(payload string) {
	s.mu.Lock()
	if p, err := uuid.Parse(payload); err == nil && len(s.pending) < maxPartial {
		s.pending[p] = struct{}{}
	} else {
		s.all = true
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take hands Run what changed since it last looked; changes that arrive
// while it rebuilds fold into the next round.
func (s *Syncer) take() ([]uuid.UUID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.all
	changed := make([]uuid.UUID, 0, len(s.pending))
	for p := range s.pending {
		changed = append(changed, p)
	}
	slices.SortFunc(changed, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	clear(s.pending)
	s.all = false
	return changed, all
}

// requeue gives back what a failed rebuild did not apply.
func (s *Syncer) requeue(changed []uuid.UUID, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = s.all || all
	for _, p := range changed {
		s.pending[p] = struct{}{}
	}
}

// save hands t to the snapshot writer, replacing any table still waiting:
// only the newest is worth writing, and writing never delays the next
// route change.
func (s *Syncer) save(t *Table) {
	if s.SnapshotPath == "" || s.snapshot == nil {
		return
	}
	for {
		select {
		case s.snapshot <- t:
			return
		default:
		}
		select {
		case <-s.snapshot:
		default:
		}
	}
}

// writeSnapshots writes the newest table, pausing after each write for ten
// times as long as it took (at most a minute): a small table is on disk at
// once; a large one (about 10 MiB at 100,000 projects) costs at most
// a tenth of a core and never starves route changes of CPU, however fast
// they come. A snapshot only matters when the edge starts without a
// database, so a minute behind is fine.
func (s *Syncer) writeSnapshots(ctx context.Context) {
	for {
		var took time.Duration
		select {
		case <-ctx.Done():
			return
		case t := <-s.snapshot:
			start := time.Now()
			if err := SaveSnapshot(s.SnapshotPath, t); err != nil {
				s.Log.WarnContext(ctx, "route snapshot not saved", "err", err)
			}
			took = time.Since(start)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(10*took, time.Minute)):
		}
	}
}
