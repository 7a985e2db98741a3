package api

import (
	"context"
	"net/http"
	"testing"
)

// GitHub's own payloads (the emulator's): a push to another branch
// previews it, its deletion stops the preview.
func TestWebhookPreviewsOtherBranches(t *testing.T) {
	e := newHookEnv(t)
	ctx := context.Background()
	e.git("checkout", "-q", "-b", "feature/x")
	e.commit("wip")
	ev, err := e.emu.Push(ctx, "alice/app", "feature/x", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, status, err := e.emu.Deliver(ctx, e.url, ev); err != nil || status != http.StatusOK {
		t.Fatalf("deliver push to feature/x: %d %v", status, err)
	}
	if _, status, err := e.emu.Deliver(ctx, e.url, e.push()); err != nil || status != http.StatusOK {
		t.Fatalf("deliver push to main: %d %v", status, err)
	}
	if n := e.count(`SELECT count(*) FROM deployments WHERE project_id = $1 AND environment = 'preview'
		AND github_ref = 'refs/heads/feature/x' AND pushed_by = 'alice' AND status = 'queued'`, e.project); n != 1 {
		t.Fatalf("%d queued previews of feature/x pushed by alice, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM deployments WHERE project_id = $1 AND environment = 'production'
		AND github_ref = 'refs/heads/main' AND pushed_by = 'alice'`, e.project); n != 1 {
		t.Fatalf("%d production deployments of main pushed by alice, want 1", n)
	}

	var head string
	if err := e.pool.QueryRow(ctx, `SELECT github_commit_sha FROM deployments WHERE environment = 'preview'`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	del, err := e.emu.BranchDeleted("alice/app", "feature/x", head)
	if err != nil {
		t.Fatal(err)
	}
	if _, status, err := e.emu.Deliver(ctx, e.url, del); err != nil || status != http.StatusOK {
		t.Fatalf("deliver branch deletion: %d %v", status, err)
	}
	if n := e.count(`SELECT count(*) FROM deployments WHERE project_id = $1 AND environment = 'preview' AND status = 'failed'
		AND failure_reason = 'its branch was deleted'`, e.project); n != 1 {
		t.Fatalf("%d previews stopped by the branch's deletion, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM deployments WHERE project_id = $1 AND environment = 'production' AND status = 'queued'`, e.project); n != 1 {
		t.Fatal("the branch's deletion touched production")
	}
}
