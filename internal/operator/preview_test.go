package operator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
)

// preview creates a built preview of branch ref, ready for the operator.
func (c *cluster) preview(t *testing.T, ref string) uuid.UUID {
	t.Helper()
	dep := id.New()
	if _, err := c.pool.Exec(context.Background(), `INSERT INTO deployments (id, project_id, status, environment, source_type, github_commit_sha, github_ref, pushed_by, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'preview', 'github', repeat('a', 40), $3, 'octocat', 3, $4, now())`, dep, c.project, ref, c.image); err != nil {
		t.Fatal(err)
	}
	return dep
}

// golive takes a deploying deployment through placement and health.
func (c *cluster) golive(t *testing.T, dep uuid.UUID) {
	t.Helper()
	c.step(t, dep)
	c.healthy(t, dep)
	if c.step(t, dep) {
		t.Fatalf("deployment %s still waiting with every instance healthy", dep)
	}
}

func (c *cluster) running(t *testing.T, dep uuid.UUID) int {
	t.Helper()
	var n int
	if err := c.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE deployment_id = $1 AND desired_state = 'running'`, dep).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPreviewGoesActiveBesideProduction(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	prod := c.deployment(t)
	c.golive(t, prod)

	first := c.preview(t, "refs/heads/feature")
	c.golive(t, first)
	if d := c.status(t, first); d.Status != deployment.StatusActive || d.Environment != deployment.EnvironmentPreview || d.Branch() != "feature" || d.PushedBy != "octocat" {
		t.Fatalf("preview: %+v", d)
	}
	if a := c.active(t); a == nil || *a != prod || c.status(t, prod).Status != deployment.StatusActive {
		t.Fatalf("a preview going live moved production: project routes to %v, production %s", a, c.status(t, prod).Status)
	}
	if n := c.running(t, first); n != 3 {
		t.Fatalf("preview runs %d instances, want the project's 3", n)
	}

	// The next push to the branch replaces its preview once live, with
	// the same grace as production; other branches and production stay.
	other := c.preview(t, "refs/heads/other")
	c.golive(t, other)
	second := c.preview(t, "refs/heads/feature")
	c.step(t, second)
	if c.status(t, first).Status != deployment.StatusActive {
		t.Fatal("the older preview retired before the new one was live")
	}
	c.healthy(t, second)
	c.step(t, second)
	old := c.status(t, first)
	if old.Status != deployment.StatusRetiring || old.StopAt == nil || time.Until(*old.StopAt) < 4*time.Minute {
		t.Fatalf("replaced preview: %s, stop at %v", old.Status, old.StopAt)
	}
	for dep, want := range map[uuid.UUID]deployment.Status{second: deployment.StatusActive, other: deployment.StatusActive, prod: deployment.StatusActive} {
		if got := c.status(t, dep).Status; got != want {
			t.Errorf("deployment %s is %s, want %s", dep, got, want)
		}
	}
	if a := c.active(t); *a != prod {
		t.Fatalf("project routes to %v, want production %s", a, prod)
	}

	// The grace passes: the replaced preview stops with its instances.
	c.pool.Exec(ctx, `UPDATE deployments SET stop_at = now() - interval '1 second' WHERE id = $1`, first)
	if n, err := c.l.Retire(ctx); err != nil || n != 1 {
		t.Fatalf("retired %d, %v", n, err)
	}
	if d := c.status(t, first); d.Status != deployment.StatusStopped || c.running(t, first) != 0 {
		t.Fatalf("replaced preview %s with %d instances meant to run", d.Status, c.running(t, first))
	}

	// Rolling back to a preview is refused, whatever its status.
	for _, dep := range []uuid.UUID{first, second} {
		if err := c.l.Rollback(ctx, nil, dep); !errors.Is(err, deployment.ErrCannotRollBack) {
			t.Errorf("rollback to preview %s: %v, want ErrCannotRollBack", dep, err)
		}
	}
	if a := c.active(t); *a != prod || c.status(t, second).Status != deployment.StatusActive {
		t.Fatal("a refused rollback changed something")
	}
}

func TestOlderPreviewHealthyLateIsRetiredAtOnce(t *testing.T) {
	c := newCluster(t, 3)
	older, newer := c.preview(t, "refs/heads/feature"), c.preview(t, "refs/heads/feature")
	c.step(t, older)
	c.golive(t, newer)
	c.healthy(t, older)
	c.step(t, older)
	d := c.status(t, older)
	if d.Status != deployment.StatusRetiring || d.StopAt == nil || d.StopAt.After(time.Now()) {
		t.Fatalf("late older preview: %s, stop at %v; want retiring now", d.Status, d.StopAt)
	}
	if c.status(t, newer).Status != deployment.StatusActive || c.active(t) != nil {
		t.Fatal("the late older preview took something over")
	}
}

// A branch deleted while its preview deploys (the webhook retires it):
// the preview never goes live, and its instances stop.
func TestPreviewOfADeletedBranchNeverGoesLive(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	dep := c.preview(t, "refs/heads/gone")
	c.step(t, dep)
	c.healthy(t, dep)
	retired, err := deployment.Store{DB: c.pool}.RetirePreviews(ctx, c.project, "refs/heads/gone", time.Now())
	if err != nil || len(retired) != 1 {
		t.Fatalf("retire previews: %d, %v", len(retired), err)
	}
	if err := c.l.Activate(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if c.step(t, dep) || c.status(t, dep).Status != deployment.StatusRetiring {
		t.Fatalf("retired preview is %s", c.status(t, dep).Status)
	}
	if n, err := c.l.Retire(ctx); err != nil || n != 1 || c.running(t, dep) != 0 {
		t.Fatalf("retired %d (%v); %d instances still meant to run", n, err, c.running(t, dep))
	}
}
