// Package e2e holds whole-platform tests: `zeitwork dev` with every role
// that exists, on the real dependencies.
package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// appArchive is the user's repository: a Dockerfile and a prebuilt static
// server (no base image can be pulled here), as a CLI would upload it.
func appArchive(t *testing.T) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "app")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Dir = "../../internal/nodeagent/testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build app: %v\n%s", err, out)
	}
	app, _ := os.ReadFile(bin)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, content []byte) {
		tw.WriteHeader(&tar.Header{Name: "./" + name, Mode: mode, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write(content)
	}
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	add("Dockerfile", 0o644, []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n"))
	add("app", 0o755, app)
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func upload(t *testing.T, data []byte) string {
	t.Helper()
	e := testenv.S3(t)
	u, _ := url.Parse(e.S3Endpoint)
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(e.S3AccessKey, e.S3SecretKey.Reveal(), "")})
	if err != nil {
		t.Fatal(err)
	}
	key := "e2e-uploads/" + id.New().String() + ".tar.gz"
	if _, err := mc.PutObject(context.Background(), e.S3Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	return key
}

// TestPushToRunning: an uploaded repository is built, deployed as three
// healthy instances on three nodes, and answers through each node-proxy; a
// second deployment replaces it, and the first one's instances stop only
// after the grace period.
func TestPushToRunning(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)
	archive := appArchive(t)
	dbURL := testdb.Empty(t)
	state := t.TempDir()
	prefix := "zwe2e" + id.New().String()[30:] + "-"
	t.Cleanup(func() {
		for i := 1; i <= 3; i++ {
			exec.Command("ip", "netns", "delete", fmt.Sprintf("%s%d", prefix, i)).Run()
		}
	})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	base := l.Addr().(*net.TCPAddr).Port%20000 + 30000
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errOut bytes.Buffer
	go func() {
		done <- cli.Main(ctx, []string{"dev"}, cli.Env{Environ: append(os.Environ(),
			"DATABASE_URL="+dbURL, "DEV_STATE_DIR="+state, "DEV_NODES=3", "DEV_NETNS_PREFIX="+prefix,
			fmt.Sprintf("DEV_PORT_BASE=%d", base), "DEV_RETIRE_GRACE=3s", "LOG_LEVEL=warn"), Stdout: &out, Stderr: &errOut})
	}()
	pool := testdb.Pool(t, dbURL)
	t.Cleanup(func() {
		// Stop every instance: retire what is left, let the agents stop them.
		pool.Exec(context.Background(), `UPDATE instances SET desired_state = 'stopped'`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			var n int
			pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE state NOT IN ('stopped', 'failed')`).Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		cancel()
		<-done
	})

	q := db.New(pool)
	waitFor(t, 60*time.Second, "3 nodes to register", func() bool {
		nodes, _ := q.NodeList(context.Background())
		return len(nodes) == 3
	}, &out, &errOut)
	project := testdb.Project(t, pool)
	pool.Exec(context.Background(), `UPDATE projects SET port = 8080, health_check_path = '/healthz', cpu_millis = 100, memory_mb = 64 WHERE id = $1`, project)
	secrets, _ := os.ReadFile(filepath.Join(state, "secrets.env"))
	token := strings.TrimPrefix(strings.Split(string(secrets), "\n")[0], "CLUSTER_TOKEN=")
	api := fmt.Sprintf("http://127.0.0.1:%d", base-19)

	deploy := func() (uuid.UUID, time.Duration) {
		key := upload(t, archive)
		start := time.Now()
		body := fmt.Sprintf(`{"project_id": %q, "archive_key": %q}`, project, key)
		req, _ := http.NewRequest("POST", api+"/v1/images", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var acc struct {
			DeploymentID uuid.UUID `json:"deployment_id"`
		}
		json.NewDecoder(resp.Body).Decode(&acc)
		if resp.StatusCode != 202 {
			t.Fatalf("POST /v1/images: %d", resp.StatusCode)
		}
		waitFor(t, 3*time.Minute, "the deployment to go active", func() bool {
			d, _ := q.DeploymentGetByID(context.Background(), acc.DeploymentID)
			if d.Status == "failed" {
				t.Fatalf("deployment failed: %v", *d.FailureReason)
			}
			return d.Status == "active"
		}, &out, &errOut)
		d, _ := q.DeploymentGetByID(context.Background(), acc.DeploymentID)
		t.Logf("deployment %s: queued→building %s, building→deploying %s, deploying→active %s",
			d.ID, d.BuildingAt.Sub(d.CreatedAt).Round(time.Millisecond), d.DeployingAt.Sub(*d.BuildingAt).Round(time.Millisecond), d.ActiveAt.Sub(*d.DeployingAt).Round(time.Millisecond))
		return acc.DeploymentID, time.Since(start)
	}

	first, took := deploy()
	t.Logf("upload → built → 3 instances healthy → active: %s", took.Round(time.Millisecond))
	instances, _ := q.InstanceListLiveByDeployment(context.Background(), first)
	nodes := map[uuid.UUID]bool{}
	for _, in := range instances {
		nodes[in.NodeID] = true
		if in.State != "healthy" {
			t.Fatalf("instance %s is %s in an active deployment", in.ID, in.State)
		}
		node, _ := q.NodeGetByID(context.Background(), in.NodeID)
		// Through the node-proxy of the node the instance runs on, as the
		// edge will send it.
		req, _ := http.NewRequest("GET", "http://"+node.InternalAddress+"/", nil)
		req.Header.Set(nodeproxy.HeaderInstance, in.ID.String())
		req.Header.Set(nodeproxy.HeaderToken, token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), in.Ipv6Address.String()) {
			t.Fatalf("instance %s via %s: %d %q", in.ID, node.InternalAddress, resp.StatusCode, b)
		}
	}
	if len(instances) != 3 || len(nodes) != 3 {
		t.Fatalf("%d instances on %d nodes, want 3 on 3", len(instances), len(nodes))
	}

	second, took := deploy()
	t.Logf("second deployment active in %s", took.Round(time.Millisecond))
	p, _ := q.ProjectGetByID(context.Background(), project)
	if p.ActiveDeploymentID == nil || *p.ActiveDeploymentID != second {
		t.Fatal("the project does not route to the second deployment")
	}
	old, _ := q.DeploymentGetByID(context.Background(), first)
	if old.Status != "retiring" {
		t.Fatalf("first deployment is %s right after the switch, want retiring (grace period)", old.Status)
	}
	var stillRunning int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'healthy'`, first).Scan(&stillRunning)
	if stillRunning != 3 {
		t.Fatalf("%d of the first deployment's instances healthy during the grace period, want 3", stillRunning)
	}
	waitFor(t, 60*time.Second, "the first deployment's instances to stop after the grace", func() bool {
		var n int
		pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'stopped'`, first).Scan(&n)
		return n == 3
	}, &out, &errOut)
	if d, _ := q.DeploymentGetByID(context.Background(), first); d.Status != "stopped" {
		t.Fatalf("first deployment %s", d.Status)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool, out, errOut *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\nstdout:\n%s\nstderr:\n%s", what, out.String(), lastN(errOut.String(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastN(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
