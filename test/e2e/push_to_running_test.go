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
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
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
	u, _ := url.Parse(e.Endpoint)
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(e.AccessKeyID, e.SecretAccessKey.Reveal(), "")})
	if err != nil {
		t.Fatal(err)
	}
	key := "e2e-uploads/" + id.New().String() + ".tar.gz"
	if _, err := mc.PutObject(context.Background(), e.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	return key
}

// platform is `zeitwork dev` running in this test process.
type platform struct {
	t       *testing.T
	pool    *pgxpool.Pool
	q       *db.Queries
	state   string
	prefix  string
	base    int
	secrets map[string]string // secrets.env: the platform's tokens
	api     string
	dbURL   string
	out     *testenv.Buffer
	errOut  *testenv.Buffer
	project uuid.UUID
	archive []byte
}

func startPlatform(t *testing.T, nodes int, env ...string) *platform {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)
	p := &platform{t: t, archive: appArchive(t), dbURL: testdb.Empty(t), state: t.TempDir(), out: &testenv.Buffer{}, errOut: &testenv.Buffer{}}
	p.prefix = testenv.DevPrefix(t, "zwe2e", 4)
	p.base = testenv.DevPortBase(t, 210)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"dev", "--bare"}, cli.Env{Environ: append(append(os.Environ(),
			"DATABASE_URL="+p.dbURL, "DEV_STATE_DIR="+p.state, fmt.Sprintf("DEV_NODES=%d", nodes), "DEV_PREFIX="+p.prefix,
			fmt.Sprintf("DEV_PORT_BASE=%d", p.base), "LOG_LEVEL=warn"), env...), Stdout: p.out, Stderr: p.errOut})
	}()
	p.pool = testdb.Pool(t, p.dbURL)
	p.q = db.New(p.pool)
	t.Cleanup(func() {
		// Stop every instance: let the agents stop them, then stop dev. No
		// deployment stays active, or the operator would heal it with new
		// instances while these stop.
		p.pool.Exec(context.Background(), `UPDATE deployments SET status = 'stopped' WHERE status = 'active'`)
		p.pool.Exec(context.Background(), `UPDATE instances SET desired_state = 'stopped'`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			var n int
			p.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances i JOIN nodes n ON n.id = i.node_id WHERE i.state NOT IN ('stopped', 'failed') AND n.status <> 'dead'`).Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		nodes, _ := p.q.NodeList(context.Background())
		cancel()
		<-done
		// Whatever the agents did not stop in time is removed here, so no
		// test leaves instances running on the machine.
		removeContainersOf(t, nodes)
	})
	p.wait(60*time.Second, fmt.Sprintf("%d nodes to register", nodes), func() bool {
		ns, _ := p.q.NodeList(context.Background())
		return len(ns) == nodes
	})
	p.project = testdb.Project(t, p.pool)
	p.pool.Exec(context.Background(), `UPDATE projects SET port = 8080, health_check_path = '/healthz', cpu_millis = 100, memory_mb = 64 WHERE id = $1`, p.project)
	secrets, _ := os.ReadFile(filepath.Join(p.state, "secrets.env"))
	p.secrets = map[string]string{}
	for _, line := range strings.Split(string(secrets), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			p.secrets[k] = v
		}
	}
	p.api = fmt.Sprintf("http://127.0.0.1:%d", p.base-19)
	return p
}

func (p *platform) wait(within time.Duration, what string, cond func() bool) {
	p.t.Helper()
	waitFor(p.t, within, what, cond, p.out, p.errOut)
}

// deploy uploads the app and asks for a build, then waits for it to be active.
func (p *platform) deploy() (uuid.UUID, time.Duration) {
	t := p.t
	t.Helper()
	key := upload(t, p.archive)
	start := time.Now()
	body := fmt.Sprintf(`{"project_id": %q, "archive_key": %q}`, p.project, key)
	req, _ := http.NewRequest("POST", p.api+"/v1/images", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+p.secrets["MANAGEMENT_TOKEN"])
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
	p.wait(3*time.Minute, "the deployment to go active", func() bool {
		d, _ := deployment.Store{DB: p.pool}.Get(context.Background(), acc.DeploymentID)
		if d.Status == deployment.StatusFailed {
			t.Fatalf("deployment failed: %v", d.FailureReason)
		}
		return d.Status == deployment.StatusActive
	})
	d, _ := p.q.DeploymentGetByID(context.Background(), acc.DeploymentID)
	t.Logf("deployment %s: queued→building %s, building→deploying %s, deploying→active %s",
		d.ID, d.BuildingAt.Sub(d.CreatedAt).Round(time.Millisecond), d.DeployingAt.Sub(*d.BuildingAt).Round(time.Millisecond), d.ActiveAt.Sub(*d.DeployingAt).Round(time.Millisecond))
	return acc.DeploymentID, time.Since(start)
}

// viaNodeProxy asks an instance for its address through its node's proxy.
func (p *platform) viaNodeProxy(in instance.Instance) {
	t := p.t
	t.Helper()
	n, _ := node.Store{DB: p.pool}.Get(context.Background(), in.NodeID)
	req, _ := http.NewRequest("GET", "http://"+n.InternalAddress+"/", nil)
	req.Header.Set(nodeproxy.HeaderInstance, in.ID.String())
	req.Header.Set(nodeproxy.HeaderToken, p.secrets["NODE_PROXY_TOKEN"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), in.Addr.String()) {
		t.Fatalf("instance %s via %s: %d %q", in.ID, n.InternalAddress, resp.StatusCode, b)
	}
}

// TestPushToRunning: an uploaded repository is built, deployed as three
// healthy instances on three nodes, and answers through each node-proxy; a
// second deployment replaces it, and the first one's instances stop only
// after the grace period.
func TestPushToRunning(t *testing.T) {
	p := startPlatform(t, 3, "RETIRE_GRACE=3s")
	ctx := context.Background()
	first, took := p.deploy()
	t.Logf("upload → built → 3 instances healthy → active: %s", took.Round(time.Millisecond))
	instances, _ := instance.Store{DB: p.pool}.ListLive(ctx, first)
	nodes := map[uuid.UUID]bool{}
	for _, in := range instances {
		nodes[in.NodeID] = true
		if in.State != instance.StateHealthy {
			t.Fatalf("instance %s is %s in an active deployment", in.ID, in.State)
		}
		p.viaNodeProxy(in)
	}
	if len(instances) != 3 || len(nodes) != 3 {
		t.Fatalf("%d instances on %d nodes, want 3 on 3", len(instances), len(nodes))
	}

	// From here on, clients hit the app through the edge without pause:
	// the switch to the second deployment and the first one's retirement
	// must not fail one request.
	load := p.loadThroughEdge()
	second, took := p.deploy()
	t.Logf("second deployment active in %s", took.Round(time.Millisecond))
	proj, _ := p.q.ProjectGetByID(ctx, p.project)
	if proj.ActiveDeploymentID == nil || *proj.ActiveDeploymentID != second {
		t.Fatal("the project does not route to the second deployment")
	}
	old, _ := deployment.Store{DB: p.pool}.Get(ctx, first)
	if old.Status != deployment.StatusRetiring {
		t.Fatalf("first deployment is %s right after the switch, want retiring (grace period)", old.Status)
	}
	var stillRunning int
	p.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'healthy'`, first).Scan(&stillRunning)
	if stillRunning != 3 {
		t.Fatalf("%d of the first deployment's instances healthy during the grace period, want 3", stillRunning)
	}
	p.wait(60*time.Second, "the first deployment's instances to stop after the grace", func() bool {
		var n int
		p.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'stopped'`, first).Scan(&n)
		return n == 3
	})
	if d, _ := (deployment.Store{DB: p.pool}).Get(ctx, first); d.Status != deployment.StatusStopped {
		t.Fatalf("first deployment %s", d.Status)
	}
	answered := load.stop()
	addrs := func(dep uuid.UUID) map[string]bool {
		m := map[string]bool{}
		live, _ := instance.Store{DB: p.pool}.ListLive(ctx, dep)
		for _, in := range live {
			m[in.Addr.String()] = true
		}
		return m
	}
	firstAddrs, secondAddrs := map[string]bool{}, addrs(second)
	for _, in := range instances {
		firstAddrs[in.Addr.String()] = true
	}
	var fromFirst, fromSecond int
	for addr, n := range answered {
		switch {
		case firstAddrs[addr]:
			fromFirst += n
		case secondAddrs[addr]:
			fromSecond += n
		default:
			t.Errorf("%d answers from %s, an instance of neither deployment", n, addr)
		}
	}
	t.Logf("through the edge: %d requests answered by the first deployment, %d by the second, 0 failed", fromFirst, fromSecond)
	if fromFirst == 0 || fromSecond == 0 {
		t.Fatalf("the load saw first %d, second %d answers; want both", fromFirst, fromSecond)
	}
}

// load is clients hitting the project's host through the dev edge.
type load struct {
	t       *testing.T
	stopped chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	byAddr  map[string]int
	failed  []string
}

func (p *platform) loadThroughEdge() *load {
	p.t.Helper()
	ctx := context.Background()
	proj, err := p.q.ProjectGetByID(ctx, p.project)
	if err != nil {
		p.t.Fatal(err)
	}
	host := proj.Slug + ".zeitwork.localhost"
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", p.base-18)
	get := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", edgeURL, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	p.wait(30*time.Second, "the edge to route "+host, func() bool {
		code, _, err := get(http.DefaultClient)
		return err == nil && code == 200
	})
	l := &load{t: p.t, stopped: make(chan struct{}), done: make(chan struct{}), byAddr: map[string]int{}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-l.stopped:
					return
				default:
				}
				code, body, err := get(c)
				l.mu.Lock()
				if err != nil || code != 200 {
					l.failed = append(l.failed, fmt.Sprintf("%d %q %v", code, body, err))
				} else {
					addr, _, _ := strings.Cut(body, " ")
					l.byAddr[addr]++
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// stop ends the load, fails the test if any request failed, and returns
// how many answers each instance address gave.
func (l *load) stop() map[string]int {
	l.t.Helper()
	close(l.stopped)
	<-l.done
	if len(l.failed) > 0 {
		l.t.Fatalf("%d requests through the edge failed; first: %s", len(l.failed), l.failed[0])
	}
	return l.byAddr
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool, out, errOut *testenv.Buffer) {
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
