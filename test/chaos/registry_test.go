package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// registry is an image registry of the test's own (filesystem storage),
// which the test stops and starts again at the same address.
type registry struct {
	t    *testing.T
	addr string
	conf string
	cmd  *exec.Cmd
	// exited is closed once cmd has been waited for.
	exited chan struct{}
	log    string
}

func startRegistry(t *testing.T) *registry {
	t.Helper()
	dir := t.TempDir()
	r := &registry{t: t, addr: testenv.ReservedAddr(t), conf: filepath.Join(dir, "registry.yml"), log: filepath.Join(dir, "registry.log")}
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: chaos-registry-secret\n", filepath.Join(dir, "data"), r.addr)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *registry) start() {
	r.t.Helper()
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cmd = exec.Command(testenv.Binary(r.t, "registry"), "serve", r.conf)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	go func() { r.cmd.Wait(); f.Close(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + r.addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log)
			r.t.Fatalf("the test's registry does not serve: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *registry) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		// Wait's goroutine owns cmd's state: wait for it to say so.
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
		}
	}
}

// TestRegistryAwayDuringDeploy: with a first deployment active, the
// registry goes away while a second one builds and comes back 20 s later.
// The second deployment either completes or fails with a reason; it is
// never active without its three healthy instances, a failed one leaves
// nothing running, and the first keeps serving until it is replaced.
func TestRegistryAwayDuringDeploy(t *testing.T) {
	reg := startRegistry(t)
	c := startCluster(t, clusterOpts{nodes: 3, env: map[string]string{"REGISTRY_ADDR": reg.addr, "BASE_IMAGE_MIRROR": reg.addr}})
	first := c.startDeploy()
	c.waitActive(first, 3*time.Minute)
	c.converged(first)
	dep := c.startDeploy()
	c.wait(3*time.Minute, "the build to start", func() bool {
		var n int
		c.pool.QueryRow(context.Background(), `SELECT count(*) FROM builds WHERE deployment_id = $1 AND status = 'running'`, dep).Scan(&n)
		return n > 0
	})
	reg.stop()
	away := time.Now()
	time.Sleep(20 * time.Second)
	reg.start()
	t.Logf("registry away for %s while the deployment was %s", time.Since(away).Round(time.Millisecond), c.status(dep))
	var d deployment.Deployment
	c.wait(4*time.Minute, "the deployment to go active or fail", func() bool {
		d, _ = deployment.Store{DB: c.pool}.Get(context.Background(), dep)
		return d.Status == deployment.StatusActive || d.Status == deployment.StatusFailed
	})
	switch d.Status {
	case deployment.StatusActive:
		t.Logf("the deployment waited and completed %s after the registry went away", time.Since(away).Round(time.Millisecond))
		c.converged(dep)
	case deployment.StatusFailed:
		t.Logf("the deployment failed: %v", d.FailureReason)
		if strings.TrimSpace(d.FailureReason) == "" {
			t.Fatal("the deployment failed without a reason")
		}
		if live := mustLive(t, c, dep); len(live) != 0 {
			t.Fatalf("a failed deployment has %d live instances", len(live))
		}
		proj, _ := c.q.ProjectGetByID(context.Background(), c.project)
		if proj.ActiveDeploymentID == nil || *proj.ActiveDeploymentID != first || c.status(first) != deployment.StatusActive {
			t.Fatalf("after the failed deployment the project routes to %v, the first deployment is %s", proj.ActiveDeploymentID, c.status(first))
		}
		c.converged(first)
	}
}
