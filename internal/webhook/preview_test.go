package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/webhook"
)

var sha3 = strings.Repeat("c3", 20)

// deletePayload is GitHub's push for a deleted branch: no head commit,
// after all zeros, deleted true.
func deletePayload(ref string) []byte {
	var m map[string]any
	if err := json.Unmarshal(pushPayload(ref, strings.Repeat("0", 40), ""), &m); err != nil {
		panic(err)
	}
	m["deleted"], m["head_commit"] = true, nil
	b, _ := json.Marshal(m)
	return b
}

type row struct {
	Environment, Ref, Status, PushedBy, SHA string
	Failure                                 *string
}

func (f *fixture) row(dep uuid.UUID) row {
	f.t.Helper()
	var r row
	var pushedBy *string
	if err := f.pool.QueryRow(context.Background(), `SELECT environment, github_ref, status, pushed_by, github_commit_sha, failure_reason FROM deployments WHERE id = $1`, dep).
		Scan(&r.Environment, &r.Ref, &r.Status, &pushedBy, &r.SHA, &r.Failure); err != nil {
		f.t.Fatal(err)
	}
	if pushedBy != nil {
		r.PushedBy = *pushedBy
	}
	return r
}

func (f *fixture) activeDeployment() *uuid.UUID {
	f.t.Helper()
	var a *uuid.UUID
	if err := f.pool.QueryRow(context.Background(), `SELECT active_deployment_id FROM projects WHERE id = $1`, f.project).Scan(&a); err != nil {
		f.t.Fatal(err)
	}
	return a
}

// pushed sends a push and returns the one deployment it created.
func (f *fixture) pushed(t *testing.T, ref, sha, message string) uuid.UUID {
	t.Helper()
	res := result(t, f.send("push", pushPayload(ref, sha, message)), http.StatusOK)
	if res.Status != webhook.StatusProcessed || len(res.Deployments) != 1 {
		t.Fatalf("push of %s to %s: %+v", sha, ref, res)
	}
	return res.Deployments[0]
}

func TestPushToAnotherBranchDeploysAPreview(t *testing.T) {
	f := newFixture(t)
	prod := f.pushed(t, "refs/heads/main", sha1, "release")
	if r := f.row(prod); r.Environment != "production" || r.PushedBy != "octocat" || r.Ref != "refs/heads/main" {
		t.Fatalf("push to main: %+v", r)
	}
	// Production went live meanwhile; a preview must leave it alone.
	if _, err := f.pool.Exec(context.Background(), `UPDATE deployments SET status = 'active', active_at = now() WHERE id = $1`, prod); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(context.Background(), `UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, prod, f.project); err != nil {
		t.Fatal(err)
	}

	body := pushPayload("refs/heads/feature/login", sha2, "wip\x00")
	res := result(t, f.deliver("feature-1", "push", body), http.StatusOK)
	if res.Status != webhook.StatusProcessed || len(res.Deployments) != 1 {
		t.Fatalf("push to feature: %+v", res)
	}
	preview := res.Deployments[0]
	if r := f.row(preview); r.Environment != "preview" || r.Ref != "refs/heads/feature/login" || r.Status != "queued" || r.PushedBy != "octocat" || r.SHA != sha2 {
		t.Fatalf("preview: %+v", r)
	}
	if n := f.count(`SELECT count(*) FROM builds WHERE deployment_id = $1`, preview); n != 1 {
		t.Fatalf("%d builds of the preview, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM river_job WHERE kind = 'build'`); n != 2 {
		t.Fatalf("%d build tasks, want 2", n)
	}
	if a := f.activeDeployment(); a == nil || *a != prod || f.row(prod).Status != "active" {
		t.Fatalf("a preview push moved production: active %v, production %s", a, f.row(prod).Status)
	}

	// The same delivery again, and another delivery of the same commit to
	// the same branch: nothing new.
	if res := result(t, f.deliver("feature-1", "push", body), http.StatusOK); !res.Duplicate {
		t.Fatalf("redelivery: %+v", res)
	}
	if res := result(t, f.send("push", body), http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, "already deployed") {
		t.Fatalf("re-push of the previewed commit: %+v", res)
	}
	if n := f.deployments(); n != 2 {
		t.Fatalf("%d deployments after replays, want 2", n)
	}

	// A commit is deployed once per place it goes: merged into main it
	// deploys to production although previewed; pushed to another branch
	// it is previewed there too; main's commit previewed on a branch.
	merged := f.pushed(t, "refs/heads/main", sha2, "merge")
	if r := f.row(merged); r.Environment != "production" {
		t.Fatalf("merge: %+v", r)
	}
	if r := f.row(f.pushed(t, "refs/heads/other", sha2, "wip")); r.Environment != "preview" || r.Ref != "refs/heads/other" {
		t.Fatalf("same commit on another branch: %+v", r)
	}
	if r := f.row(f.pushed(t, "refs/heads/feature/login", sha1, "back")); r.Environment != "preview" {
		t.Fatalf("main's commit on the branch: %+v", r)
	}
	// The production push is queued; production stays what it was.
	if a := f.activeDeployment(); a == nil || *a != prod {
		t.Fatalf("active deployment %v, want %s", a, prod)
	}
}

// A preview that is on its way out does not hold its commit: a branch
// pushed back to that commit previews it again.
func TestBranchPushedBackIsPreviewedAgain(t *testing.T) {
	f := newFixture(t)
	first := f.pushed(t, "refs/heads/feature", sha1, "one")
	f.pushed(t, "refs/heads/feature", sha2, "two")
	if _, err := f.pool.Exec(context.Background(), `UPDATE deployments SET status = 'stopped', stopped_at = now() WHERE id = $1`, first); err != nil {
		t.Fatal(err)
	}
	again := f.pushed(t, "refs/heads/feature", sha1, "one again")
	if again == first || f.row(again).Status != "queued" {
		t.Fatalf("pushed back: %s (first %s)", again, first)
	}
}

func TestDeletedBranchStopsItsPreviews(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	prod := f.pushed(t, "refs/heads/main", sha1, "release")
	running := f.pushed(t, "refs/heads/feature", sha1, "one")
	deploying := f.pushed(t, "refs/heads/feature", sha2, "two")
	building := f.pushed(t, "refs/heads/feature", sha3, "three")
	other := f.pushed(t, "refs/heads/other", sha1, "elsewhere")
	for _, stmt := range []struct {
		sql string
		dep uuid.UUID
	}{
		{`UPDATE deployments SET status = 'active', active_at = now() WHERE id = $1`, running},
		{`UPDATE deployments SET status = 'deploying', deploying_at = now() WHERE id = $1`, deploying},
		{`UPDATE deployments SET status = 'building', building_at = now() WHERE id = $1`, building},
	} {
		if _, err := f.pool.Exec(ctx, stmt.sql, stmt.dep); err != nil {
			t.Fatal(err)
		}
	}

	del := deletePayload("refs/heads/feature")
	if res := result(t, f.deliver("delete-1", "push", del), http.StatusOK); res.Status != webhook.StatusProcessed || len(res.Deployments) != 0 {
		t.Fatalf("branch deletion: %+v", res)
	}
	for _, dep := range []uuid.UUID{running, deploying} {
		if r := f.row(dep); r.Status != "retiring" {
			t.Errorf("preview %s after its branch was deleted: %+v, want retiring", dep, r)
		}
	}
	if n := f.count(`SELECT count(*) FROM deployments WHERE id = ANY($1) AND stop_at <= now()`, []uuid.UUID{running, deploying}); n != 2 {
		t.Errorf("%d of 2 retired previews due to stop now", n)
	}
	if r := f.row(building); r.Status != "failed" || r.Failure == nil || !strings.Contains(*r.Failure, "branch was deleted") {
		t.Errorf("building preview: %+v", r)
	}
	if n := f.count(`SELECT count(*) FROM builds WHERE deployment_id = $1 AND status = 'cancelled'`, building); n != 1 {
		t.Errorf("the building preview's build is not cancelled")
	}
	if r := f.row(other); r.Status != "queued" {
		t.Errorf("another branch's preview: %+v", r)
	}
	if r := f.row(prod); r.Status != "queued" {
		t.Errorf("production: %+v", r)
	}

	// Replayed, and deleted again: nothing more to stop.
	if res := result(t, f.deliver("delete-1", "push", del), http.StatusOK); !res.Duplicate {
		t.Fatalf("redelivered deletion: %+v", res)
	}
	if res := result(t, f.send("push", del), http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, "no preview") {
		t.Fatalf("second deletion: %+v", res)
	}
	// The production branch deleted: production keeps running.
	if res := result(t, f.send("push", deletePayload("refs/heads/main")), http.StatusOK); res.Status != webhook.StatusIgnored {
		t.Fatalf("production branch deletion: %+v", res)
	}
	if r := f.row(prod); r.Status != "queued" {
		t.Errorf("production after its branch was deleted: %+v", r)
	}
}
