package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/webhook"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const secret = "It's a Secret to Everybody"

const (
	installationID = int64(4242)
	repositoryID   = int64(1296269)
	repoFullName   = "octo-org/hello-world"
)

type fixture struct {
	t       testing.TB
	pool    *pgxpool.Pool
	h       http.Handler
	project uuid.UUID
	seq     int
}

// newFixture is a database with an organisation, its installation and a
// project building repoFullName's main branch through it.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	pool := testdb.New(t)
	ctx := context.Background()
	org, inst, proj := id.New(), id.New(), id.New()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO organisations (id, slug, name) VALUES ($1, 'octo', 'Octo')`, []any{org}},
		{`INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
		  VALUES ($1, $2, $3, 'octo-org', 'Organization')`, []any{inst, installationID, org}},
		{`INSERT INTO projects (id, organisation_id, slug, name, github_installation_id, github_repository_id, github_repository_full_name, branch)
		  VALUES ($1, $2, 'hello', 'Hello', $3, $4, $5, 'main')`, []any{proj, org, inst, repositoryID, repoFullName}},
	} {
		if _, err := pool.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatal(err)
		}
	}
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := webhook.New(pool, q, secret, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, pool: pool, h: rc.Handler(), project: proj}
}

func sign(body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(body)
	return "sha256=" + hex.EncodeToString(h.Sum(nil))
}

// send posts a signed delivery with a fresh delivery id.
func (f *fixture) send(event string, body []byte) *httptest.ResponseRecorder {
	f.seq++
	return f.deliver(fmt.Sprintf("delivery-%d", f.seq), event, body)
}

func (f *fixture) deliver(delivery, event string, body []byte) *httptest.ResponseRecorder {
	return f.do(delivery, event, sign(body), body)
}

func (f *fixture) do(delivery, event, signature string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/v1/webhook/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	if signature != "" {
		r.Header.Set("X-Hub-Signature-256", signature)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) deliveries() int { return f.count(`SELECT count(*) FROM webhook_deliveries`) }
func (f *fixture) deployments() int {
	return f.count(`SELECT count(*) FROM deployments WHERE project_id = $1`, f.project)
}

func result(t *testing.T, w *httptest.ResponseRecorder, wantCode int) webhook.Result {
	t.Helper()
	if w.Code != wantCode {
		t.Fatalf("status %d, want %d: %s", w.Code, wantCode, w.Body)
	}
	var res webhook.Result
	if wantCode == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatalf("body %s: %v", w.Body, err)
		}
	}
	return res
}

func pushPayload(ref, sha, message string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": ref, "before": strings.Repeat("0", 40), "after": sha, "created": false, "deleted": false, "forced": false,
		"repository": map[string]any{"id": repositoryID, "name": "hello-world", "full_name": repoFullName},
		"pusher":     map[string]any{"name": "octocat", "email": "octocat@github.com"},
		"head_commit": map[string]any{
			"id": sha, "tree_id": strings.Repeat("e", 40), "message": message, "timestamp": "2026-12-02T04:00:00Z",
			"author": map[string]any{"name": "Octo Cat", "email": "octocat@github.com", "username": "octocat"},
		},
		"installation": map[string]any{"id": installationID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDI0Mg=="},
	})
	return b
}

func installationPayload(action string) []byte {
	b, _ := json.Marshal(map[string]any{
		"action": action,
		"installation": map[string]any{
			"id": installationID, "app_id": 1,
			"account":      map[string]any{"login": "octo-org", "id": 99, "type": "Organization"},
			"suspended_at": map[bool]any{true: "2026-12-02T04:00:00Z", false: nil}[action == "suspend"],
		},
		"sender": map[string]any{"login": "octocat", "id": 1},
	})
	return b
}

func removedPayload(repoIDs ...int64) []byte {
	var repos []map[string]any
	for _, id := range repoIDs {
		repos = append(repos, map[string]any{"id": id, "full_name": repoFullName, "name": "hello-world"})
	}
	b, _ := json.Marshal(map[string]any{
		"action": "removed", "repository_selection": "selected",
		"repositories_added": []any{}, "repositories_removed": repos,
		"installation": map[string]any{"id": installationID},
	})
	return b
}

var (
	sha1 = strings.Repeat("a1", 20)
	sha2 = strings.Repeat("b2", 20)
)

func TestSignatureIsCheckedBeforeAnything(t *testing.T) {
	f := newFixture(t)
	body := pushPayload("refs/heads/main", sha1, "hi")
	other := sign([]byte("another body"))
	for name, sig := range map[string]string{
		"missing":     "",
		"sha1":        "sha1=" + strings.Repeat("0", 40),
		"no prefix":   strings.TrimPrefix(sign(body), "sha256="),
		"not hex":     "sha256=" + strings.Repeat("zz", 32),
		"short":       sign(body)[:40],
		"upper case":  "sha256=" + strings.ToUpper(strings.TrimPrefix(sign(body), "sha256=")) + "x",
		"wrong":       other,
		"wrong event": "sha256=" + strings.Repeat("00", 32),
	} {
		w := f.do("d-"+name, "push", sig, body)
		if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"code":"unauthorized"`) {
			t.Errorf("%s: %d %s, want a 401 problem", name, w.Code, w.Body)
		}
	}
	if n := f.deliveries(); n != 0 {
		t.Fatalf("%d deliveries recorded without a valid signature", n)
	}
}

func TestPingAndOtherEvents(t *testing.T) {
	f := newFixture(t)
	if res := result(t, f.send("ping", []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("ping: %+v", res)
	}
	if res := result(t, f.send("issues", []byte(`{"action":"opened"}`)), http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, "issues") {
		t.Fatalf("issues: %+v", res)
	}
	if n := f.deliveries(); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	r := httptest.NewRequest(http.MethodGet, "/v1/webhook/github", nil)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != http.MethodPost {
		t.Fatalf("GET: %d %v", w.Code, w.Header())
	}
	big := bytes.Repeat([]byte(" "), webhook.MaxBody+1)
	if w := f.deliver("big", "push", big); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d %s", w.Code, w.Body)
	}
	if w := f.deliver("", "push", []byte(`{}`)); w.Code != http.StatusBadRequest {
		t.Fatalf("no delivery id: %d %s", w.Code, w.Body)
	}
	if w := f.deliver("d", "", []byte(`{}`)); w.Code != http.StatusBadRequest {
		t.Fatalf("no event: %d %s", w.Code, w.Body)
	}
	if n := f.deliveries(); n != 0 {
		t.Fatalf("%d deliveries recorded from refused requests", n)
	}
	// Signed but not JSON: recorded as failed, refused so GitHub shows it.
	if w := f.deliver("garbled", "push", []byte(`{"ref":`)); w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("garbled push: %d %s", w.Code, w.Body)
	}
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE status = 'failed' AND error IS NOT NULL`); n != 1 {
		t.Fatalf("%d failed deliveries, want 1", n)
	}
}

func TestPushDeploysTheCommitOnce(t *testing.T) {
	f := newFixture(t)
	body := pushPayload("refs/heads/main", sha1, "Add a greeting")
	res := result(t, f.deliver("push-1", "push", body), http.StatusOK)
	if res.Status != webhook.StatusProcessed || len(res.Deployments) != 1 {
		t.Fatalf("push: %+v", res)
	}
	var (
		sha, ref, msg, source, status string
		builds, tasks                 int
	)
	ctx := context.Background()
	if err := f.pool.QueryRow(ctx, `SELECT github_commit_sha, github_ref, commit_message, source_type, status FROM deployments WHERE id = $1 AND project_id = $2`,
		res.Deployments[0], f.project).Scan(&sha, &ref, &msg, &source, &status); err != nil {
		t.Fatal(err)
	}
	if sha != sha1 || ref != "refs/heads/main" || msg != "Add a greeting" || source != "github" || status != "queued" {
		t.Fatalf("deployment %s %s %q %s %s", sha, ref, msg, source, status)
	}
	builds = f.count(`SELECT count(*) FROM builds WHERE deployment_id = $1`, res.Deployments[0])
	tasks = f.count(`SELECT count(*) FROM river_job WHERE kind = 'build'`)
	if builds != 1 || tasks != 1 {
		t.Fatalf("%d builds and %d build tasks, want 1 and 1", builds, tasks)
	}
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE delivery_id = 'push-1' AND status = 'processed' AND processed_at IS NOT NULL`); n != 1 {
		t.Fatal("delivery not recorded as processed")
	}

	// GitHub's redelivery: same id, same body.
	if res := result(t, f.deliver("push-1", "push", body), http.StatusOK); !res.Duplicate || res.Status != webhook.StatusProcessed {
		t.Fatalf("redelivery: %+v", res)
	}
	// The same id with another body is not GitHub's redelivery.
	if w := f.deliver("push-1", "push", pushPayload("refs/heads/main", sha2, "other")); w.Code != http.StatusConflict {
		t.Fatalf("reused id: %d %s", w.Code, w.Body)
	}
	// Another delivery of the same commit (a re-push).
	if res := result(t, f.send("push", body), http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, "already deployed") {
		t.Fatalf("same commit again: %+v", res)
	}
	if n, m := f.deployments(), f.count(`SELECT count(*) FROM river_job`); n != 1 || m != 1 {
		t.Fatalf("%d deployments and %d tasks after replays, want 1 and 1", n, m)
	}
	if n := f.deliveries(); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}

	// The next commit deploys again.
	if res := result(t, f.send("push", pushPayload("refs/heads/main", sha2, "More")), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("second commit: %+v", res)
	}
	if n := f.deployments(); n != 2 {
		t.Fatalf("%d deployments, want 2", n)
	}
}

func TestPushesThatBuildNothing(t *testing.T) {
	f := newFixture(t)
	deleted := pushPayload("refs/heads/main", strings.Repeat("0", 40), "")
	deleted = bytes.Replace(deleted, []byte(`"deleted":false`), []byte(`"deleted":true`), 1)
	otherRepo := bytes.Replace(pushPayload("refs/heads/main", sha1, "x"), fmt.Appendf(nil, `"id":%d`, repositoryID), []byte(`"id":7`), 1)
	otherInst := bytes.Replace(pushPayload("refs/heads/main", sha1, "x"), fmt.Appendf(nil, `"id":%d`, installationID), []byte(`"id":8`), 1)
	for name, tc := range map[string]struct {
		body   []byte
		reason string
	}{
		"a branch deletion":        {deleted, "deleted"},
		"a tag":                    {pushPayload("refs/tags/v1", sha1, "v1"), "not a branch"},
		"an unconnected repo":      {otherRepo, "no project"},
		"another installation":     {otherInst, "no project"},
		"a bad sha":                {pushPayload("refs/heads/main", "HEAD", "x"), ""},
		"a branch with a NUL":      {pushPayload("refs/heads/feature\x00", sha1, "a\x00b"), ""},
		"a branch git refuses":     {pushPayload("refs/heads/a..b", sha1, "x"), ""},
		"an empty JSON object":     {[]byte(`{}`), "not a branch"},
		"a null head commit":       {[]byte(`{"ref":"refs/heads/main","head_commit":null}`), "no head commit"},
		"a repository as a string": {[]byte(`{"ref":"refs/heads/main","repository":"x"}`), ""},
	} {
		w := f.send("push", tc.body)
		if tc.reason == "" {
			if w.Code != http.StatusUnprocessableEntity {
				t.Errorf("%s: %d %s, want 422", name, w.Code, w.Body)
			}
			continue
		}
		if res := result(t, w, http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, tc.reason) {
			t.Errorf("%s: %+v, want ignored with %q", name, res, tc.reason)
		}
	}
	if n := f.deployments(); n != 0 {
		t.Fatalf("%d deployments, want none", n)
	}
}

func TestInstallationLifecycle(t *testing.T) {
	f := newFixture(t)
	push := func(sha string) webhook.Result {
		t.Helper()
		return result(t, f.send("push", pushPayload("refs/heads/main", sha, "x")), http.StatusOK)
	}
	if res := result(t, f.send("installation", installationPayload("suspend")), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("suspend: %+v", res)
	}
	if n := f.count(`SELECT count(*) FROM github_installations WHERE suspended_at = '2026-12-02T04:00:00Z'`); n != 1 {
		t.Fatal("suspension not recorded with GitHub's time")
	}
	if res := push(sha1); res.Status != webhook.StatusIgnored {
		t.Fatalf("push while suspended: %+v", res)
	}
	result(t, f.send("installation", installationPayload("unsuspend")), http.StatusOK)
	if res := push(sha1); res.Status != webhook.StatusProcessed {
		t.Fatalf("push after unsuspend: %+v", res)
	}
	if res := result(t, f.send("installation", installationPayload("new_permissions_accepted")), http.StatusOK); res.Status != webhook.StatusIgnored {
		t.Fatalf("new_permissions_accepted: %+v", res)
	}
	if res := result(t, f.send("installation", installationPayload("created")), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("created again: %+v", res)
	}

	// Losing the repository detaches the project; another repo's removal does not.
	if res := result(t, f.send("installation_repositories", removedPayload(7)), http.StatusOK); res.Status != webhook.StatusIgnored {
		t.Fatalf("removing another repository: %+v", res)
	}
	if res := result(t, f.send("installation_repositories", removedPayload(repositoryID)), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("removing the repository: %+v", res)
	}
	if n := f.count(`SELECT count(*) FROM projects WHERE github_installation_id IS NULL AND github_repository_id = $1`, repositoryID); n != 1 {
		t.Fatal("project still linked to a repository its installation lost")
	}
	if res := push(sha2); res.Status != webhook.StatusIgnored {
		t.Fatalf("push after removal: %+v", res)
	}

	// Deleting the installation removes it; an unknown one is ignored.
	if res := result(t, f.send("installation", installationPayload("deleted")), http.StatusOK); res.Status != webhook.StatusProcessed {
		t.Fatalf("deleted: %+v", res)
	}
	if n := f.count(`SELECT count(*) FROM github_installations`); n != 0 {
		t.Fatal("installation not deleted")
	}
	if res := result(t, f.send("installation", installationPayload("created")), http.StatusOK); res.Status != webhook.StatusIgnored || !strings.Contains(res.Reason, "not linked") {
		t.Fatalf("created unknown: %+v", res)
	}
	if n := f.deployments(); n != 1 {
		t.Fatalf("%d deployments, want 1", n)
	}
}

func TestDeletedInstallationIgnoresPushes(t *testing.T) {
	f := newFixture(t)
	result(t, f.send("installation", installationPayload("deleted")), http.StatusOK)
	if res := result(t, f.send("push", pushPayload("refs/heads/main", sha1, "x")), http.StatusOK); res.Status != webhook.StatusIgnored {
		t.Fatalf("push after deletion: %+v", res)
	}
	if n := f.deployments(); n != 0 {
		t.Fatalf("%d deployments, want none", n)
	}
}

func TestNewRefusesAnEmptySecret(t *testing.T) {
	if _, err := webhook.New(nil, nil, "", zlog.Discard()); err == nil {
		t.Fatal("New accepted an empty secret")
	}
}

func TestRacingDeliveriesDeployOnce(t *testing.T) {
	f := newFixture(t)
	body := pushPayload("refs/heads/main", sha1, "x")
	codes := make(chan int, 4)
	// Two copies of one delivery and two deliveries of one commit.
	for _, delivery := range []string{"same", "same", "other-1", "other-2"} {
		go func() { codes <- f.deliver(delivery, "push", body).Code }()
	}
	for range 4 {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("status %d, want 200", code)
		}
	}
	if n := f.deployments(); n != 1 {
		t.Fatalf("%d deployments, want 1", n)
	}
	if n := f.deliveries(); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
}

func TestPruneForgetsOldDeliveries(t *testing.T) {
	f := newFixture(t)
	body := []byte(`{"zen":"x"}`)
	result(t, f.deliver("old", "ping", body), http.StatusOK)
	if _, err := f.pool.Exec(context.Background(), `UPDATE webhook_deliveries SET received_at = now() - interval '8 days'`); err != nil {
		t.Fatal(err)
	}
	result(t, f.deliver("new", "ping", body), http.StatusOK)
	q, err := queue.New(f.pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := webhook.New(f.pool, q, secret, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := rc.Prune(context.Background(), time.Now().Add(-7*24*time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if n := f.deliveries(); n != 1 {
		t.Fatalf("%d deliveries left, want 1", n)
	}
}
