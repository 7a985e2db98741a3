package builder_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"

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

// TestUploadedSourceIsBuiltThroughTheQueue is the builder role's whole
// path: a CLI upload in the object store, a build task in the queue, a
// builder working it (fetch, detect, BuildKit, push), the image recorded
// and the deployment moved on to deploying.
func TestUploadedSourceIsBuiltThroughTheQueue(t *testing.T) {
	base := shellBase(t)
	bkit, reg := stack(t)
	fetcher, put := uploadFetcher(t)
	pool := testdb.New(t)
	fetcher.Queries = db.New(pool)
	proj := project(t, pool)
	if _, err := pool.Exec(context.Background(), `UPDATE projects SET root_directory = 'app' WHERE id = $1`, proj); err != nil {
		t.Fatal(err)
	}

	key := "test-uploads/" + id.New().String() + ".tar.gz"
	put(key, tarGzFiles(t, map[string]string{
		"app/Dockerfile": "FROM " + base + "\nCOPY . /srv\nRUN test -e /srv/index.html && echo context-ok\n",
		"app/index.html": "<h1>hi</h1>",
		"README.md":      "outside the root directory",
	}))

	svc := &builder.Service{
		Pool: pool, BuildKit: bkit, Fetcher: fetcher, Plan: builder.DetectPlanner(detect.BaseImages{}), Log: zlog.Discard(),
		Config: builder.Config{BuilderID: "queue-test", Timeout: 2 * time.Minute, Lease: 5 * time.Second, Registry: reg, AnonymousRegistry: true, Logs: buildlog.DefaultLimits},
	}
	workers := queue.NewWorkers(build.Queue)
	queue.Register(workers, &builder.Worker{Service: svc})
	q, err := queue.New(pool, workers, config.Queue{Workers: 2, JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Stop(context.Background()) })

	start := time.Now()
	req, err := build.Request(ctx, pool, q, proj, build.Source{ArchiveKey: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d db.Deployment
	for {
		d, err = db.New(pool).DeploymentGetByID(ctx, req.Deployment.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status == string(deployment.StatusDeploying) || d.Status == string(deployment.StatusFailed) || time.Since(start) > 2*time.Minute {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("upload → image pushed → deploying in %s", time.Since(start).Round(time.Millisecond))
	lines, _ := buildlog.Page(ctx, db.New(pool), req.Build.ID, [16]byte{}, 1000)
	var logText []string
	for _, l := range lines {
		logText = append(logText, l.Text)
	}
	if d.Status != string(deployment.StatusDeploying) || d.ImageID == nil {
		t.Fatalf("deployment %s (%v); log:\n%s", d.Status, d.FailureReason, strings.Join(logText, "\n"))
	}
	if !strings.Contains(strings.Join(logText, "\n"), "context-ok") || !strings.Contains(strings.Join(logText, "\n"), "building as dockerfile") {
		t.Fatalf("build log:\n%s", strings.Join(logText, "\n"))
	}
}

func tarGzFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "./" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}
