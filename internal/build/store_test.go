package build_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/buildlog"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func newBuild(t *testing.T) (*build.Store, build.Build) {
	t.Helper()
	pool := testdb.New(t)
	project := testdb.Project(t, pool)
	s := build.NewStore(pool)
	key := "uploads/a.tar.gz"
	dep, b, err := s.Create(context.Background(), db.DeploymentCreateParams{ID: id.New(), ProjectID: project, SourceType: "upload", SourceArchiveKey: &key, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Status != string(deployment.StatusQueued) || b.Status != build.StatusQueued || b.DeploymentID != dep.ID {
		t.Fatalf("created %s / %+v", dep.Status, b)
	}
	return s, b
}

func TestGetUnknownIsNotFound(t *testing.T) {
	s := build.NewStore(testdb.New(t))
	if _, err := s.Get(context.Background(), id.New()); !errors.Is(err, build.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	if _, err := s.Project(context.Background(), id.New()); !errors.Is(err, build.ErrProjectNotFound) {
		t.Fatalf("Project = %v, want ErrProjectNotFound", err)
	}
}

func TestClaimIsExclusiveUntilTheLeaseRunsOut(t *testing.T) {
	s, b := newBuild(t)
	ctx := context.Background()
	if _, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	held, err := s.Claim(ctx, b.ID, "b", time.Now().Add(time.Minute))
	if !errors.Is(err, build.ErrHeld) || held.DeadlineAt == nil || *held.BuilderID != "a" {
		t.Fatalf("second claim = %+v, %v; want ErrHeld with a's deadline", held, err)
	}
	if err := s.Renew(ctx, b.ID, "b", time.Now().Add(time.Minute)); !errors.Is(err, build.ErrLeaseLost) {
		t.Fatalf("renewing someone else's claim = %v, want ErrLeaseLost", err)
	}
	// a's lease runs out without renewal: b takes over, and a's lease is lost.
	if err := s.Renew(ctx, b.ID, "a", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Claim(ctx, b.ID, "b", time.Now().Add(time.Minute)); err != nil || got.Status != build.StatusRunning || *got.BuilderID != "b" {
		t.Fatalf("takeover = %+v, %v", got, err)
	}
	if err := s.Renew(ctx, b.ID, "a", time.Now().Add(time.Minute)); !errors.Is(err, build.ErrLeaseLost) {
		t.Fatalf("a renewing after the takeover = %v, want ErrLeaseLost", err)
	}
}

func TestCancelledBuildCannotBeClaimedOrRenewed(t *testing.T) {
	s, b := newBuild(t)
	ctx := context.Background()
	if _, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(ctx, b.ID); !errors.Is(err, build.ErrEnded) {
		t.Fatalf("second cancel = %v, want ErrEnded", err)
	}
	if err := s.Renew(ctx, b.ID, "a", time.Now().Add(time.Minute)); !errors.Is(err, build.ErrLeaseLost) {
		t.Fatalf("renew after cancel = %v, want ErrLeaseLost", err)
	}
	got, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute))
	if !errors.Is(err, build.ErrEnded) || got.Status != build.StatusCancelled {
		t.Fatalf("claim after cancel = %s, %v; want ErrEnded", got.Status, err)
	}
}

func TestFailMovesTheDeploymentWithTheBuild(t *testing.T) {
	s, b := newBuild(t)
	ctx := context.Background()
	if _, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	dep, err := s.StartDeployment(ctx, b)
	if err != nil || dep.Status != string(deployment.StatusBuilding) {
		t.Fatalf("start = %s, %v", dep.Status, err)
	}
	if err := s.Fail(ctx, b, build.StatusFailed, "build failed: no"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, b.ID)
	if err != nil || got.Status != build.StatusFailed || got.FailureReason == nil || *got.FailureReason != "build failed: no" {
		t.Fatalf("build after Fail = %+v, %v", got, err)
	}
	if _, err := s.StartDeployment(ctx, b); !errors.Is(err, build.ErrDeploymentMoved) {
		t.Fatalf("start a failed deployment = %v, want ErrDeploymentMoved", err)
	}
}

func TestCancelDeploymentOnlyBeforeItIsBuilt(t *testing.T) {
	s, b := newBuild(t)
	ctx := context.Background()
	if _, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelDeployment(ctx, b.DeploymentID, "cancelled"); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, b.ID, "a", time.Now().Add(time.Minute)); !errors.Is(err, build.ErrLeaseLost) {
		t.Fatalf("the builder renewing after the cancel = %v, want ErrLeaseLost", err)
	}
	if got, err := s.Get(ctx, b.ID); err != nil || got.Status != build.StatusCancelled {
		t.Fatalf("build %s, %v", got.Status, err)
	}
	// The builder finishing anyway records nothing and moves nothing.
	if err := s.Succeed(ctx, b, id.New(), build.Image{Repository: "r/app", Tag: "v1", Digest: "sha256:x"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelDeployment(ctx, b.DeploymentID, "cancelled"); !errors.Is(err, build.ErrDeploymentMoved) {
		t.Fatalf("second cancel = %v, want ErrDeploymentMoved", err)
	}
}

// TestFinishWakesTheLogsFollowers: a build's end wakes whoever follows its
// log, so that their stream (and a deploy waiting on it) ends with the
// build; with a one-hour poll under the follower, nothing else would.
func TestFinishWakesTheLogsFollowers(t *testing.T) {
	pool := testdb.New(t)
	s := build.NewStore(pool)
	key := "uploads/a.tar.gz"
	_, b, err := s.Create(context.Background(), db.DeploymentCreateParams{ID: id.New(), ProjectID: testdb.Project(t, pool), SourceType: "upload", SourceArchiveKey: &key, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Claim(ctx, b.ID, "a", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	lim := buildlog.DefaultLimits
	lim.FlushInterval = 20 * time.Millisecond
	w := buildlog.NewWriter(pool, b.ID, lim, zlog.Discard())
	seen := make(chan string, 10)
	errc := make(chan error, 1)
	go func() {
		errc <- buildlog.Follow(ctx, pool, b.ID, uuid.Nil, time.Hour,
			func(ctx context.Context) (bool, error) {
				got, err := s.Get(ctx, b.ID)
				return got.Status == build.StatusCancelled, err
			},
			func(l buildlog.Line) error { seen <- l.Text; return nil })
	}()
	// Each line seen before the next is written: the second can only come
	// through a wake-up, so by then the follower listens.
	for i := range 2 {
		w.Line(buildlog.Stdout, "line %d", i)
		select {
		case <-seen:
		case <-time.After(20 * time.Second):
			t.Fatalf("the follower did not see line %d", i)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not end with the build")
	}
}
