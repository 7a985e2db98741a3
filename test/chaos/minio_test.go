package chaos

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// objectStore is a MinIO of the test's own, stopped and started again at
// the same address with the same data.
type objectStore struct {
	t   *testing.T
	dir string
	cfg config.S3
	cmd *exec.Cmd
	// exited is closed once cmd has been waited for.
	exited chan struct{}
}

func startMinIO(t *testing.T) *objectStore {
	t.Helper()
	m := &objectStore{t: t, dir: t.TempDir(), cfg: config.S3{
		Endpoint: "http://" + testenv.ReservedAddr(t), Region: "us-east-1", Bucket: "chaos",
		AccessKeyID: "chaoskey", SecretAccessKey: config.Secret("chaossecret-" + id.New().String()[:8]),
	}}
	m.start()
	t.Cleanup(m.stop)
	u, _ := url.Parse(m.cfg.Endpoint)
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(m.cfg.AccessKeyID, m.cfg.SecretAccessKey.Reveal(), "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(context.Background(), m.cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *objectStore) start() {
	m.t.Helper()
	u, _ := url.Parse(m.cfg.Endpoint)
	log, err := os.OpenFile(filepath.Join(m.dir, "minio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(testenv.Binary(m.t, "minio"), "server", filepath.Join(m.dir, "data"), "--address", u.Host, "--console-address", testenv.ReservedAddr(m.t), "--quiet")
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.cfg.AccessKeyID, "MINIO_ROOT_PASSWORD="+m.cfg.SecretAccessKey.Reveal())
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	exited := make(chan struct{})
	m.exited = exited
	go func() { m.cmd.Wait(); log.Close(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(m.cfg.Endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(m.dir, "minio.log"))
			m.t.Fatalf("the test's MinIO does not serve: %v\n%s", err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (m *objectStore) stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		// Wait's goroutine owns cmd's state: wait for it to say so.
		select {
		case <-m.exited:
		case <-time.After(5 * time.Second):
		}
	}
}

// TestMinIOAwayDuringDeploy: with a first deployment active, the bucket
// holding uploads goes away just after a second upload and comes back
// 20 s later. The second deployment is refused, completes, or fails with
// a reason; it is never active without its three healthy instances, a
// failed one starts nothing, and the first keeps serving.
func TestMinIOAwayDuringDeploy(t *testing.T) {
	m := startMinIO(t)
	c := startCluster(t, clusterOpts{nodes: 3, s3: &m.cfg})
	first := c.startDeploy()
	c.waitActive(first, 3*time.Minute)
	key := upload(t, m.cfg, c.archive)
	m.stop()
	away := time.Now()
	dep := c.requestDeploy(key)
	time.Sleep(20 * time.Second)
	m.start()
	t.Logf("MinIO away for %s; the deployment was %s", time.Since(away).Round(time.Millisecond), c.status(dep))
	var d deployment.Deployment
	c.wait(4*time.Minute, "the deployment to go active or fail", func() bool {
		d, _ = deployment.Store{DB: c.pool}.Get(context.Background(), dep)
		return d.Status == deployment.StatusActive || d.Status == deployment.StatusFailed
	})
	switch d.Status {
	case deployment.StatusActive:
		t.Logf("the deployment waited and completed %s after MinIO went away", time.Since(away).Round(time.Millisecond))
		c.converged(dep)
	case deployment.StatusFailed:
		t.Logf("the deployment failed: %s", d.FailureReason)
		if strings.TrimSpace(d.FailureReason) == "" {
			t.Fatal("the deployment failed without a reason")
		}
		if live := mustLive(t, c, dep); len(live) != 0 {
			t.Fatalf("a failed deployment has %d live instances", len(live))
		}
		if c.status(first) != deployment.StatusActive {
			t.Fatalf("after the failed deployment the first one is %s", c.status(first))
		}
		c.converged(first)
	}
}
