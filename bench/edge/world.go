package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// world is the cluster as the edge sees it: three nodes whose
// internal_address is a port of the backend, one project whose active
// deployment has an instance on each, healthy.
type world struct {
	pool    *pgxpool.Pool
	tag     string
	project uuid.UUID
	image   uuid.UUID
	host    string // the project's <slug>.<appsDomain>
	// lastHost is the host of the last project loadProjects added.
	lastHost string
	domains  int // custom domains added so far, for unique names
}

// newWorld registers the nodes and takes a deployment of the project to
// active through the operator's real lifecycle, playing the node agents:
// every instance placed is marked healthy.
func newWorld(ctx context.Context, dbURL string, nodeAddrs []string, stateDir string) (*world, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	w := &world{pool: pool, tag: id.New().String()[30:]}
	if err := w.setup(ctx, nodeAddrs, stateDir); err != nil {
		pool.Close()
		return nil, err
	}
	return w, nil
}

func (w *world) close() { w.pool.Close() }

func (w *world) setup(ctx context.Context, nodeAddrs []string, stateDir string) error {
	for i, addr := range nodeAddrs {
		if _, err := nodeagent.Register(ctx, w.pool, ipam.DefaultCluster, filepath.Join(stateDir, fmt.Sprint(i)), node.Registration{
			Hostname: fmt.Sprintf("bench-%d", i), InternalAddress: addr, CPUMillis: 4000, MemoryMB: 8192,
		}); err != nil {
			return fmt.Errorf("register node %s: %w", addr, err)
		}
	}
	org, slug := id.New(), "bench-"+w.tag
	w.project, w.image = id.New(), id.New()
	w.host = slug + "." + appsDomain
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Bench')`, []any{org, slug}},
		{`INSERT INTO projects (id, organisation_id, slug, name) VALUES ($1, $2, $3, 'Bench')`, []any{w.project, org, slug}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'bench/app', $3, 'sha256:' || repeat('b', 64))`, []any{w.image, w.project, w.tag}},
	} {
		if _, err := w.pool.Exec(ctx, s.q, s.args...); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	dep := id.New()
	if _, err := w.pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3, now())`, dep, w.project, w.image); err != nil {
		return fmt.Errorf("setup: deployment: %w", err)
	}
	lc := &operator.Lifecycle{Pool: w.pool, Place: operator.SchedulerPlacer(operator.DefaultPolicy.HeartbeatDeadline), Policy: operator.DefaultPolicy, Log: zlog.Discard()}
	for range 100 {
		err := lc.Deploy(ctx, dep)
		var snooze *river.JobSnoozeError
		switch {
		case err == nil:
			d, err := deployment.Store{DB: w.pool}.Get(ctx, dep)
			if err != nil {
				return err
			}
			if d.Status != deployment.StatusActive {
				return fmt.Errorf("setup: deployment %s is %s, not active", dep, d.Status)
			}
			return nil
		case !errors.As(err, &snooze):
			return fmt.Errorf("setup: deploy: %w", err)
		}
		if _, err := w.pool.Exec(ctx, `UPDATE instances SET state = 'healthy' WHERE deployment_id = $1 AND desired_state = 'running'`, dep); err != nil {
			return err
		}
	}
	return fmt.Errorf("setup: deployment %s never went active", dep)
}

// loadProjects adds n projects in one transaction, each with an active
// deployment and three healthy instances, one per node: what the edge
// routes in a cluster of n apps. The rows are written directly (placing
// 3n instances through the operator would take the whole benchmark); the
// edge reads them with the same queries either way.
func (w *world) loadProjects(ctx context.Context, n int) error {
	org := id.New()
	prefix := "bulk-" + w.tag + "-"
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		for _, s := range []struct {
			q    string
			args []any
		}{
			{`INSERT INTO organisations (id, slug, name) VALUES ($1, $2, 'Bulk')`, []any{org, "bulk-" + w.tag}},
			{`INSERT INTO projects (id, organisation_id, slug, name)
				SELECT gen_random_uuid(), $1, $2 || i, 'Bulk' FROM generate_series(1, $3::int) i`, []any{org, prefix, n}},
			{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at, active_at)
				SELECT gen_random_uuid(), id, 'active', 'upload', 'k', 3, $2, now(), now() FROM projects WHERE organisation_id = $1`, []any{org, w.image}},
			{`UPDATE projects SET active_deployment_id = deployments.id
				FROM deployments WHERE deployments.project_id = projects.id AND projects.organisation_id = $1`, []any{org}},
			{`INSERT INTO instances (id, deployment_id, node_id, image_id, state, ipv6_address, port, cpu_millis, memory_mb)
				SELECT gen_random_uuid(), dep, node, $2, 'healthy', ('fd99::' || to_hex(n / 65536) || ':' || to_hex(n % 65536))::inet, 8080, 1000, 512
				FROM (SELECT deployments.id AS dep, nodes.id AS node, row_number() OVER () AS n
					FROM deployments JOIN projects ON projects.id = deployments.project_id CROSS JOIN nodes
					WHERE projects.organisation_id = $1) placed`, []any{org, w.image}},
		} {
			if _, err := tx.Exec(ctx, s.q, s.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A cluster grows over months and autovacuum keeps the statistics up to
	// date; after a bulk load they are stale until it runs, and the
	// planner's guesses would be measured instead of the edge.
	if _, err := w.pool.Exec(ctx, `ANALYZE projects, deployments, instances, nodes, domains`); err != nil {
		return err
	}
	w.lastHost = fmt.Sprintf("%s%d.%s", prefix, n, appsDomain)
	return nil
}

// addDomain adds a verified custom domain to the project, committed when
// it returns.
func (w *world) addDomain(ctx context.Context) (uuid.UUID, string, error) {
	w.domains++
	did, name := id.New(), fmt.Sprintf("c%d-%s.bench-domains.test", w.domains, w.tag)
	_, err := w.pool.Exec(ctx, `INSERT INTO domains (id, project_id, name, status, verification_token, verified_at) VALUES ($1, $2, $3, 'verified', 't', now())`, did, w.project, name)
	return did, name, err
}

func (w *world) removeDomain(ctx context.Context, did uuid.UUID) error {
	_, err := w.pool.Exec(ctx, `DELETE FROM domains WHERE id = $1`, did)
	return err
}
