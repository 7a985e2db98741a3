package builder_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// treeFetcher stands in for GitHub/S3: it writes a fixed tree.
type treeFetcher map[string]string

func (f treeFetcher) Fetch(_ context.Context, _ db.Project, _ db.Deployment, dir string) (string, error) {
	for p, content := range f {
		path := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// ownDockerfile plans with the tree's Dockerfile, as detection does when
// there is one.
func ownDockerfile(dir, _ string) (detect.Plan, error) {
	df, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		return detect.Plan{}, errors.New("no Dockerfile and nothing else to build from")
	}
	return detect.Plan{Kind: detect.KindDockerfile, Dockerfile: df, Reasons: []string{"found Dockerfile"}}, nil
}

type harness struct {
	pool    *pgxpool.Pool
	q       *queue.Queue
	project uuid.UUID
	svc     *builder.Service
	built   atomic.Int32
}

func newHarness(t *testing.T, tree treeFetcher) *harness {
	t.Helper()
	bkit, reg := stack(t)
	pool := testdb.New(t)
	h := &harness{pool: pool}
	var err error
	if h.q, err = queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard()); err != nil {
		t.Fatal(err)
	}
	h.project = project(t, pool)
	h.svc = &builder.Service{
		Pool: pool, BuildKit: bkit, Fetcher: tree, Plan: ownDockerfile, Log: zlog.Discard(),
		Config: builder.Config{
			BuilderID: "builder-test", Timeout: 2 * time.Minute, Lease: 3 * time.Second,
			Registry: builder.Registry{Host: reg.Host, Insecure: true}, AnonymousRegistry: true, Logs: buildlog.DefaultLimits,
			Built: func(ctx context.Context, tx pgx.Tx, d db.Deployment, img db.Image) error {
				h.built.Add(1)
				return nil
			},
		},
	}
	return h
}

func project(t *testing.T, pool *pgxpool.Pool) uuid.UUID { return testdb.Project(t, pool) }

func (h *harness) request(t *testing.T) build.Requested {
	t.Helper()
	r, err := build.Request(context.Background(), h.pool, h.q, h.project, build.Source{ArchiveKey: "uploads/" + id.New().String() + ".tar.gz"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (h *harness) state(t *testing.T, r build.Requested) (db.Deployment, build.Build, []string) {
	t.Helper()
	ctx := context.Background()
	q := db.New(h.pool)
	d, err := q.DeploymentGetByID(ctx, r.Deployment.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := build.NewStore(h.pool).Get(ctx, r.Build.ID)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := buildlog.Page(ctx, q, r.Build.ID, uuid.Nil, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var text []string
	for _, l := range lines {
		text = append(text, l.Text)
	}
	return d, b, text
}

func TestBuildSucceedsAndRecordsTheImage(t *testing.T) {
	base := shellBase(t)
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\nRUN echo compiling the app\nCOPY app.txt /app.txt\n", "app.txt": "v1"})
	r := h.request(t)
	if r.Deployment.Status != string(deployment.StatusQueued) || r.Build.Status != build.StatusQueued {
		t.Fatalf("requested %+v %+v", r.Deployment.Status, r.Build.Status)
	}
	if err := h.svc.Run(context.Background(), r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	d, b, logs := h.state(t, r)
	if d.Status != string(deployment.StatusDeploying) || d.ImageID == nil || b.Status != build.StatusSucceeded || b.DetectedKind == nil || *b.DetectedKind != string(detect.KindDockerfile) {
		t.Fatalf("after the build: deployment %s image %v, build %s", d.Status, d.ImageID, b.Status)
	}
	img, err := db.New(h.pool).ImageGetByID(context.Background(), *d.ImageID)
	if err != nil || !strings.HasPrefix(img.Digest, "sha256:") || img.Tag != d.ID.String() || !strings.HasSuffix(img.Repository, "/"+h.project.String()) {
		t.Fatalf("image row %+v, %v", img, err)
	}
	all := strings.Join(logs, "\n")
	for _, want := range []string{"fetching source (uploaded archive)", "building as dockerfile: found Dockerfile", "compiling the app", "pushed "} {
		if !strings.Contains(all, want) {
			t.Errorf("build log lacks %q:\n%s", want, all)
		}
	}
	if h.built.Load() != 1 {
		t.Fatalf("Built hook ran %d times", h.built.Load())
	}
	// The task arriving again (a retry, a duplicate) does nothing.
	if err := h.svc.Run(context.Background(), r.Build.ID, false); err != nil || h.built.Load() != 1 {
		t.Fatalf("second run: %v, built %d", err, h.built.Load())
	}
}

// TestBuildLogIsWholeWhenTheBuildEnds: the outcome is recorded only once
// every line is stored — here with a writer that would otherwise flush
// once an hour, the Built hook (in the transaction that records success)
// already finds the log's last line.
func TestBuildLogIsWholeWhenTheBuildEnds(t *testing.T) {
	base := shellBase(t)
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\nRUN echo compiling the app\n"})
	h.svc.Config.Logs.FlushInterval, h.svc.Config.Logs.FlushLines = time.Hour, 1<<20
	r := h.request(t)
	var seen []string
	h.svc.Config.Built = func(ctx context.Context, tx pgx.Tx, d db.Deployment, img db.Image) error {
		lines, err := buildlog.Page(ctx, db.New(h.pool), r.Build.ID, uuid.Nil, 10000)
		for _, l := range lines {
			seen = append(seen, l.Text)
		}
		return err
	}
	if err := h.svc.Run(context.Background(), r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(seen, "\n")
	if len(seen) == 0 || !strings.HasPrefix(seen[len(seen)-1], "pushed ") || !strings.Contains(all, "compiling the app") {
		t.Fatalf("when the build's success was recorded, its log held:\n%s", all)
	}
}

func TestFailedBuildFailsTheDeploymentWithTheReason(t *testing.T) {
	base := shellBase(t)
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\nRUN echo tests failed >&2 && exit 2\n"})
	r := h.request(t)
	if err := h.svc.Run(context.Background(), r.Build.ID, false); err != nil {
		t.Fatalf("a user's failing build is not an error to retry: %v", err)
	}
	d, b, logs := h.state(t, r)
	if d.Status != string(deployment.StatusFailed) || d.FailureReason == nil || !strings.Contains(*d.FailureReason, "exit code: 2") || d.ImageID != nil {
		t.Fatalf("deployment %s %v image %v", d.Status, d.FailureReason, d.ImageID)
	}
	if b.Status != build.StatusFailed || !strings.Contains(strings.Join(logs, "\n"), "tests failed") {
		t.Fatalf("build %s, logs %v", b.Status, logs)
	}
	// Said once, at the start, in the deployment and as the log's last line.
	if !strings.HasPrefix(*d.FailureReason, "build failed: ") || strings.Count(*d.FailureReason, "build failed") != 1 || logs[len(logs)-1] != *d.FailureReason {
		t.Errorf("failure reason %q, last log line %q: want \"build failed: …\" once, in both", *d.FailureReason, logs[len(logs)-1])
	}
	var images int
	h.pool.QueryRow(context.Background(), "SELECT count(*) FROM images").Scan(&images)
	if images != 0 {
		t.Fatalf("%d images recorded for a failed build", images)
	}
}

func TestNothingToBuildIsAUserError(t *testing.T) {
	h := newHarness(t, treeFetcher{"README.md": "hi"})
	r := h.request(t)
	if err := h.svc.Run(context.Background(), r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	d, _, _ := h.state(t, r)
	if d.Status != string(deployment.StatusFailed) || !strings.Contains(*d.FailureReason, "nothing else to build from") {
		t.Fatalf("deployment %s %v", d.Status, d.FailureReason)
	}
}

func TestBuildHeldByAnotherBuilderIsNotRunTwice(t *testing.T) {
	base := shellBase(t)
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\n"})
	r := h.request(t)
	ctx := context.Background()
	if _, err := build.NewStore(h.pool).Claim(ctx, r.Build.ID, "other", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	err := h.svc.Run(ctx, r.Build.ID, false)
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) {
		t.Fatalf("Run on a held build = %v, want a snooze until the holder's lease ends", err)
	}

	// The other builder died: its lease runs out and this one takes over.
	if _, err := h.pool.Exec(ctx, `UPDATE builds SET deadline_at = now() - interval '1 second' WHERE id = $1`, r.Build.ID); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	d, b, _ := h.state(t, r)
	if d.Status != string(deployment.StatusDeploying) || b.Status != build.StatusSucceeded || *b.BuilderID != "builder-test" {
		t.Fatalf("after takeover: deployment %s, build %s by %v", d.Status, b.Status, b.BuilderID)
	}
}

func TestCancelAndDeadlineStopARunningBuild(t *testing.T) {
	base := shellBase(t)
	for _, tc := range []struct {
		name, want string
		cancel     bool
	}{
		{"cancelled", "build cancelled", true},
		{"deadline", "exceeded its deadline", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\nRUN sleep 120 # " + id.New().String() + "\n"})
			h.svc.Config.Lease = 900 * time.Millisecond
			if !tc.cancel {
				h.svc.Config.Timeout = 3 * time.Second
			}
			r := h.request(t)
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- h.svc.Run(context.Background(), r.Build.ID, false) }()
			if tc.cancel {
				time.Sleep(time.Second)
				if err := build.NewStore(h.pool).Cancel(context.Background(), r.Build.ID); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the build kept running")
			}
			t.Logf("stopped after %s", time.Since(start).Round(time.Millisecond))
			d, _, _ := h.state(t, r)
			if d.Status != string(deployment.StatusFailed) || !strings.Contains(*d.FailureReason, tc.want) {
				t.Fatalf("deployment %s %v, want failed with %q", d.Status, d.FailureReason, tc.want)
			}
		})
	}
}

func TestInfrastructureFailureIsRetriedThenFails(t *testing.T) {
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM scratch\n"})
	h.svc.BuildKit = builder.BuildKit{Addr: "unix:///nonexistent/buildkitd.sock"}
	r := h.request(t)
	ctx := context.Background()
	if err := h.svc.Run(ctx, r.Build.ID, false); err == nil {
		t.Fatal("buildkitd unreachable was not reported for a retry")
	}
	d, b, _ := h.state(t, r)
	if b.Status != build.StatusQueued || d.Status != string(deployment.StatusBuilding) {
		t.Fatalf("after a retryable failure: build %s, deployment %s", b.Status, d.Status)
	}
	if err := h.svc.Run(ctx, r.Build.ID, true); err != nil {
		t.Fatal(err)
	}
	d, b, _ = h.state(t, r)
	if b.Status != build.StatusFailed || d.Status != string(deployment.StatusFailed) || !strings.Contains(*d.FailureReason, "buildkitd") {
		t.Fatalf("after the last attempt: build %s, deployment %s %v", b.Status, d.Status, d.FailureReason)
	}
}

func TestRequestBuildValidatesAndWritesAllOrNothing(t *testing.T) {
	pool := testdb.New(t)
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	proj := project(t, pool)
	ctx := context.Background()
	for _, tc := range []struct {
		project uuid.UUID
		src     build.Source
		want    error
	}{
		{proj, build.Source{}, build.ErrInvalidSource},
		{proj, build.Source{CommitSHA: "abc"}, build.ErrInvalidSource},
		{proj, build.Source{CommitSHA: strings.Repeat("a", 40)}, build.ErrInvalidSource}, // no repository connected
		{proj, build.Source{CommitSHA: strings.Repeat("a", 40), ArchiveKey: "k"}, build.ErrInvalidSource},
		{proj, build.Source{ArchiveKey: "../etc/passwd"}, build.ErrInvalidSource},
		{id.New(), build.Source{ArchiveKey: "k.tar.gz"}, build.ErrProjectNotFound},
	} {
		if _, err := build.Request(ctx, pool, q, tc.project, tc.src, nil); !errors.Is(err, tc.want) {
			t.Errorf("%+v: err = %v, want %v", tc.src, err, tc.want)
		}
	}
	var deployments, builds, jobs int
	pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM deployments), (SELECT count(*) FROM builds), (SELECT count(*) FROM river_job)").Scan(&deployments, &builds, &jobs)
	if deployments+builds+jobs != 0 {
		t.Fatalf("refused requests left %d deployments, %d builds, %d tasks", deployments, builds, jobs)
	}
	if _, err := build.Request(ctx, pool, q, proj, build.Source{ArchiveKey: "uploads/a.tar.gz"}, nil); err != nil {
		t.Fatal(err)
	}
	pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM deployments), (SELECT count(*) FROM builds), (SELECT count(*) FROM river_job WHERE kind = 'build')").Scan(&deployments, &builds, &jobs)
	if deployments != 1 || builds != 1 || jobs != 1 {
		t.Fatalf("a good request wrote %d deployments, %d builds, %d tasks; want one each", deployments, builds, jobs)
	}
}

func TestBuildOfADeletedProjectIsDoneNotRetried(t *testing.T) {
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM scratch\n"})
	r := h.request(t)
	ctx := context.Background()
	if _, err := h.pool.Exec(ctx, `DELETE FROM projects WHERE id = $1`, r.Deployment.ProjectID); err != nil {
		t.Fatal(err)
	}
	// An error would have River retry the task until it gives up; the
	// build is gone for good, so the task is done.
	if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
		t.Fatalf("Run of a deleted project's build = %v, want nil", err)
	}
	var n int
	if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM builds`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d builds after running a deleted one (%v)", n, err)
	}
}
