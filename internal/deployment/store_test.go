package deployment_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestStatusMovesOnlyFromTheStatusesGiven(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	deps := deployment.Store{DB: pool}
	dep := id.New()
	if _, err := pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas) VALUES ($1, $2, 'deploying', 'upload', 'k', 3)`, dep, testdb.Project(t, pool)); err != nil {
		t.Fatal(err)
	}
	if _, err := deps.SetStatus(ctx, dep, deployment.Move{To: deployment.StatusStopped, From: []deployment.Status{deployment.StatusRetiring}}); !errors.Is(err, deployment.ErrMoved) {
		t.Fatalf("moved from a status it is not in: %v", err)
	}
	failed, err := deps.SetStatus(ctx, dep, deployment.Move{To: deployment.StatusFailed, Reason: "no nodes", From: []deployment.Status{deployment.StatusDeploying}})
	if err != nil || failed.Status != deployment.StatusFailed || failed.FailureReason != "no nodes" {
		t.Fatalf("fail: %+v %v", failed, err)
	}
	if list, err := deps.ListByStatus(ctx, deployment.StatusFailed, 10); err != nil || len(list) != 1 {
		t.Fatalf("failed deployments: %d %v", len(list), err)
	}

	retiring := id.New()
	pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas) VALUES ($1, $2, 'active', 'upload', 'k', 3)`, retiring, testdb.Project(t, pool))
	if _, err := deps.SetStatus(ctx, retiring, deployment.Move{To: deployment.StatusRetiring, StopAt: time.Now().Add(-time.Second), From: []deployment.Status{deployment.StatusActive}}); err != nil {
		t.Fatal(err)
	}
	if due, err := deps.ListRetiringDue(ctx, 10); err != nil || len(due) != 1 || due[0].ID != retiring {
		t.Fatalf("retiring due: %+v %v", due, err)
	}

	if _, err := deps.Get(ctx, id.New()); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("unknown deployment: %v", err)
	}
	gone, _ := pgxpool.New(ctx, "postgres://zeitwork@127.0.0.1:1/gone")
	gone.Close()
	if _, err := (deployment.Store{DB: gone}).Get(ctx, dep); err == nil || errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("get with the database gone: %v", err)
	}
}
