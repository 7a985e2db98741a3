package edge_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// preview takes a preview of branch ref to active through the real
// operator, as a push to that branch would once built.
func (w *world) preview(ctx context.Context, ref string) uuid.UUID {
	w.t.Helper()
	dep := id.New()
	if _, err := w.pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, environment, source_type, github_commit_sha, github_ref, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'preview', 'github', repeat('a', 40), $3, 3, $4, now())`, dep, w.project, ref, w.image); err != nil {
		w.t.Fatal(err)
	}
	for range 100 {
		err := w.lc.Deploy(ctx, dep)
		var snooze *river.JobSnoozeError
		if err == nil {
			return dep
		}
		if !errors.As(err, &snooze) {
			w.t.Fatal(err)
		}
		if err := w.agents(ctx); err != nil {
			w.t.Fatal(err)
		}
	}
	w.t.Fatal("preview never went active")
	return dep
}

// A live preview answers at its own host only: the project's host and
// custom domains stay with production, whatever the previews do.
func TestPreviewsNeverTakeTheProjectsHosts(t *testing.T) {
	w := newWorld(t, testdb.NewURL(t))
	ctx := context.Background()
	prod := w.deploy(ctx)
	if _, err := w.pool.Exec(ctx, `INSERT INTO domains (id, project_id, name, status, verification_token, verified_at) VALUES ($1, $2, 'app.customer.test', 'verified', 't', now())`, id.New(), w.project); err != nil {
		t.Fatal(err)
	}
	s := &edge.Syncer{Pool: w.pool, Routes: w.routes, AppsDomain: "zeitwork.test", Metrics: edge.NewMetrics(prometheus.NewRegistry()), Log: zlog.Discard()}

	first := w.preview(ctx, "refs/heads/feature")
	other := w.preview(ctx, "refs/heads/other")
	second := w.preview(ctx, "refs/heads/feature") // first retires, still running its grace
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	tbl := w.routes.Load()
	want := map[string]uuid.UUID{
		w.slug + ".zeitwork.test":          prod,
		"app.customer.test":                prod,
		prod.String() + ".zeitwork.test":   prod,
		first.String() + ".zeitwork.test":  first,
		other.String() + ".zeitwork.test":  other,
		second.String() + ".zeitwork.test": second,
	}
	for host, dep := range want {
		if r, ok := tbl.Lookup(host); !ok || r.DeploymentID != dep || len(r.Backends) != 3 {
			t.Errorf("Lookup(%s) = %+v, %v; want %s with 3 backends", host, r, ok, dep)
		}
	}
	for host, r := range tbl.All() {
		if _, ok := want[host]; !ok {
			t.Errorf("unexpected route %s → %s", host, r.DeploymentID)
		}
	}

	// Once the replaced preview stops, its host is gone.
	if _, err := w.pool.Exec(ctx, `UPDATE deployments SET stop_at = now() WHERE id = $1`, first); err != nil {
		t.Fatal(err)
	}
	if n, err := w.lc.Retire(ctx); err != nil || n != 1 {
		t.Fatalf("retired %d, %v", n, err)
	}
	if err := w.agents(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if r, ok := w.routes.Load().Lookup(first.String() + ".zeitwork.test"); ok {
		t.Fatalf("stopped preview still routed: %+v", r)
	}
	if r, ok := w.routes.Load().Lookup(w.slug + ".zeitwork.test"); !ok || r.DeploymentID != prod {
		t.Fatalf("project host = %+v, %v", r, ok)
	}
}
