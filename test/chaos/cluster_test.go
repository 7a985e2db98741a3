// Package chaos holds the chaos suite: the platform's roles run as
// separate `zeitwork` processes on the real dependencies, and a test
// kills one of them (SIGKILL, no chance to clean up) or takes a
// dependency away mid-deploy, then checks that the platform converges
// with nothing lost, nothing done twice and nothing left behind on the
// host.
package chaos

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// binary is the zeitwork binary every role of every test runs, built once.
var binary struct {
	once sync.Once
	path string
	err  error
}

func zeitworkBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "zwchaos-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "zeitwork")
		build := exec.Command("go", "build", "-o", binary.path, "./cmd/zeitwork")
		build.Dir = "../.."
		if out, err := build.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.path != "" {
		os.RemoveAll(filepath.Dir(binary.path))
	}
	os.Exit(code)
}

// proc is one role running as its own process, so that the test can kill
// it with SIGKILL and start it again with the same configuration.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	log  string // its stderr, appended to across restarts
	// internal is a node agent's NODE_INTERNAL_ADDRESS.
	internal string
	cmd      *exec.Cmd
	done     chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(binary.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a signal to the test's group does not reach
	// it. It dies with the test process, should that die before cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
}

// kill9 kills the role at once: no deferred cleanup, no graceful stop.
func (p *proc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.done
}

// stop asks the role to stop as an operator would (SIGTERM), and kills it
// if it has not stopped within 20 s.
func (p *proc) stop() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) addr() string { return p.internal }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// cluster is a platform made of one process per role: an operator (with
// its management API), a builder, an edge and n node agents, each node
// agent in a network namespace of its own as `zeitwork dev` simulates
// nodes, on a database of the test's own.
type cluster struct {
	t        *testing.T
	dbURL    string
	pool     *pgxpool.Pool
	q        *db.Queries
	prefix   string
	base     int
	token    string
	keys     string
	project  uuid.UUID
	archive  []byte
	operator *proc
	builder  *proc
	edge     *proc
	nodes    []*proc
	nodeNS   []string // containerd namespace and netns name of node i
	nodeDirs []string // state directory of node i (holds its node id)
	// lost are nodes a test took away: converged does not look at them.
	lost map[int]bool
	// s3 is where uploads go and the builder fetches them.
	s3 config.S3
}

type clusterOpts struct {
	nodes int
	// env is added to every role's environment (after the defaults).
	env map[string]string
	// dbURL, when set, is the database (already migrated) instead of a
	// testdb one.
	dbURL string
	// s3, when set, is the bucket for uploads instead of the shared one.
	s3 *config.S3
}

func startCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)
	zeitworkBinary(t)
	c := &cluster{t: t, archive: appArchive(t), dbURL: o.dbURL, lost: map[int]bool{}, s3: testenv.S3(t)}
	if o.s3 != nil {
		c.s3 = *o.s3
	}
	if c.dbURL == "" {
		c.dbURL = testdb.NewURL(t)
	}
	c.prefix = testenv.DevPrefix(t, "zwchaos", o.nodes)
	c.base = testenv.DevPortBase(t, 210)
	tok := id.New().String() + id.New().String()
	c.token = strings.ReplaceAll(tok, "-", "")[:48]
	c.keys = secret.NewKey("chaos1")
	c.pool = testdb.Pool(t, c.dbURL)
	c.q = db.New(c.pool)
	logs := t.TempDir()
	local := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

	common := devenv.Environment(map[string]string{
		"DATABASE_URL": c.dbURL, "DATABASE_MAX_CONNS": "5",
		// A token per internal API, as in production: c.token is the
		// management API's, which the test itself calls.
		"MANAGEMENT_TOKEN": c.token, "CLUSTER_TOKEN": c.token + "-node-api", "NODE_PROXY_TOKEN": c.token + "-node-proxy",
		"SECRETS_KEYS": c.keys,
		"LOG_LEVEL":    "info", "LOG_FORMAT": "text",
		"EDGE_APPS_DOMAIN": "zeitwork.localhost",
		// A killed worker's task is presumed dead after this (River's
		// rescuer); production's default is a minute.
		"QUEUE_JOB_TIMEOUT": "20s", "QUEUE_RESCUE_AFTER": "20s",
		"NODE_HEARTBEAT_DEADLINE": "10s",
	})
	maps.Copy(common, map[string]string{
		"S3_ENDPOINT": c.s3.Endpoint, "S3_BUCKET": c.s3.Bucket, "S3_REGION": c.s3.Region,
		"S3_ACCESS_KEY_ID": c.s3.AccessKeyID, "S3_SECRET_ACCESS_KEY": c.s3.SecretAccessKey.Reveal(),
	})
	maps.Copy(common, o.env)
	role := func(name string, overrides map[string]string, args ...string) *proc {
		env := maps.Clone(common)
		maps.Copy(env, overrides)
		var list []string
		for k, v := range env {
			list = append(list, k+"="+v)
		}
		// The go toolchain and containerd tools need a PATH.
		list = append(list, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"))
		return &proc{t: t, name: name, args: args, env: list, log: filepath.Join(logs, name+".log")}
	}
	c.operator = role("operator", map[string]string{"OPERATOR_ADDR": local(c.base - 19)}, "operator")
	c.edge = role("edge", map[string]string{
		"EDGE_HTTP_ADDR": local(c.base - 18), "EDGE_HTTPS_ADDR": "off", "EDGE_METRICS_ADDR": local(c.base - 17),
		"EDGE_ROUTES_SNAPSHOT": filepath.Join(t.TempDir(), "edge-routes.json"), "EDGE_POLL_INTERVAL": "5s",
	}, "edge")
	c.builder = role("builder", map[string]string{"BUILDER_ID": c.prefix + "-builder"}, "builder")
	state := t.TempDir()
	for i := 1; i <= o.nodes; i++ {
		name := devenv.NodeName(c.prefix, i)
		ns, err := devenv.EnsureNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(state, name)
		proxy := local(c.base + 100 + i)
		n := role(fmt.Sprintf("node%d", i), map[string]string{
			"NODE_INTERNAL_ADDRESS": proxy, "NODEPROXY_ADDR": proxy, "NODEAGENT_ADDR": local(c.base + i),
			// Variables and the registry credential come from the operator.
			"OPERATOR_URL": "http://" + local(c.base-19),
			"NODE_REGION":  "dev", "NODE_STATE_DIR": dir, "INSTANCE_LOG_DIR": filepath.Join(dir, "logs"),
			"NETWORK_NODE_NETNS": ns, "NODE_EGRESS": "nat", "CONTAINERD_NAMESPACE": name,
			"NODE_CPU_MILLIS": "2000", "NODE_MEMORY_MB": "4096", "NODE_HEARTBEAT_INTERVAL": "1s",
		}, "nodeagent")
		n.internal = proxy
		c.nodes = append(c.nodes, n)
		c.nodeNS = append(c.nodeNS, name)
		c.nodeDirs = append(c.nodeDirs, dir)
	}
	t.Cleanup(c.cleanup)
	for _, p := range c.all() {
		p.start()
	}
	c.wait(60*time.Second, fmt.Sprintf("%d nodes to register", o.nodes), func() bool {
		ns, _ := c.q.NodeList(context.Background())
		return len(ns) == o.nodes
	})
	c.wait(30*time.Second, "the management API", func() bool {
		resp, err := http.Get("http://" + local(c.base-19) + "/v1/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	c.project = testdb.Project(t, c.pool)
	c.pool.Exec(context.Background(), `UPDATE projects SET port = 8080, health_check_path = '/healthz', cpu_millis = 100, memory_mb = 64 WHERE id = $1`, c.project)
	return c
}

func (c *cluster) all() []*proc {
	return append([]*proc{c.operator, c.edge, c.builder}, c.nodes...)
}

// cleanup stops every instance through the agents, stops the roles, and
// removes whatever an agent did not (containers, instance namespaces).
func (c *cluster) cleanup() {
	ctx := context.Background()
	c.pool.Exec(ctx, `UPDATE deployments SET status = 'stopped' WHERE status = 'active'`)
	c.pool.Exec(ctx, `UPDATE instances SET desired_state = 'stopped'`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		c.pool.QueryRow(ctx, `SELECT count(*) FROM instances i JOIN nodes n ON n.id = i.node_id WHERE i.state NOT IN ('stopped', 'failed') AND n.status <> 'dead'`).Scan(&n)
		if n == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range c.all() {
		p.stop()
	}
	if c.t.Failed() {
		for _, p := range c.all() {
			c.t.Logf("---- %s (last lines)\n%s", p.name, p.tail(30))
		}
	}
	cc, err := client.New(testenv.Containerd(c.t))
	if err != nil {
		return
	}
	defer cc.Close()
	for _, ns := range c.nodeNS {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, _ := cc.Containers(nctx)
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				task.Delete(nctx, client.WithProcessKill)
			}
			ctr.Delete(nctx, client.WithSnapshotCleanup)
		}
	}
	for _, dir := range c.nodeDirs {
		if nid, err := nodeagent.StoredID(dir); err == nil {
			nodeagent.RemoveSimulatedNetns(nid) //nolint:errcheck // best effort at cleanup
		}
	}
}

func netnsWithPrefix(t *testing.T, prefix string) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Errorf("ip netns list: %v", err)
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if name != "" && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}

func (c *cluster) wait(within time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDeploy uploads the app and asks the operator for a build, and
// returns the deployment's id at once.
func (c *cluster) startDeploy() uuid.UUID {
	c.t.Helper()
	return c.requestDeploy(upload(c.t, c.s3, c.archive))
}

// requestDeploy asks the operator for a build of an uploaded archive.
func (c *cluster) requestDeploy(key string) uuid.UUID {
	t := c.t
	t.Helper()
	body := fmt.Sprintf(`{"project_id": %q, "archive_key": %q}`, c.project, key)
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/v1/images", c.base-19), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
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
	return acc.DeploymentID
}

func (c *cluster) status(dep uuid.UUID) deployment.Status {
	d, _ := deployment.Store{DB: c.pool}.Get(context.Background(), dep)
	return d.Status
}

// waitActive waits for the deployment to go active; failing is fatal.
func (c *cluster) waitActive(dep uuid.UUID, within time.Duration) {
	c.t.Helper()
	c.wait(within, "the deployment to go active", func() bool {
		d, _ := deployment.Store{DB: c.pool}.Get(context.Background(), dep)
		if d.Status == deployment.StatusFailed {
			c.t.Fatalf("deployment failed: %v", d.FailureReason)
		}
		if d.Status == deployment.StatusActive {
			return true
		}
		// A task the queue gave up on never comes back: say so at once.
		var kind string
		err := c.pool.QueryRow(context.Background(), `SELECT kind FROM river_job WHERE state = 'discarded' LIMIT 1`).Scan(&kind)
		if err == nil {
			c.t.Fatalf("deployment %s: the %s task was discarded by the queue, so nothing will finish it\n%s", d.Status, kind, c.jobs())
		}
		return false
	})
}

// jobs lists the queue's tasks, for a failure message.
func (c *cluster) jobs() string {
	rows, err := c.pool.Query(context.Background(), `SELECT id, kind, state, attempt, errors::text FROM river_job ORDER BY id`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var (
			id                int64
			kind, state, errs string
			attempt           int
		)
		var e *string
		rows.Scan(&id, &kind, &state, &attempt, &e)
		if e != nil {
			errs = *e
		}
		fmt.Fprintf(&b, "  task %d %s %s attempt %d %s\n", id, kind, state, attempt, errs)
	}
	return b.String()
}

// converged checks what a converged platform looks like for an active
// deployment dep and returns its live instances: three healthy instances
// on three nodes; every node's containers and instance network namespaces
// are exactly its live instances (nothing leaked, nothing doubled); one
// build and one image for the deployment.
func (c *cluster) converged(dep uuid.UUID) []instance.Instance {
	t := c.t
	t.Helper()
	ctx := context.Background()
	live, err := instance.Store{DB: c.pool}.ListLive(ctx, dep)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[uuid.UUID]bool{}
	for _, in := range live {
		nodes[in.NodeID] = true
		if in.State != instance.StateHealthy {
			t.Errorf("instance %s is %s in an active deployment", in.ID, in.State)
		}
	}
	if len(live) != 3 || len(nodes) != 3 {
		t.Errorf("%d live instances on %d nodes, want 3 on 3", len(live), len(nodes))
	}
	// What the database says runs, by node, against what the hosts hold.
	want := map[string][]string{}
	rows, _ := c.pool.Query(ctx, `SELECT i.id::text, n.id::text FROM instances i JOIN nodes n ON n.id = i.node_id WHERE i.state NOT IN ('stopped', 'failed')`)
	for rows.Next() {
		var iid, nid string
		rows.Scan(&iid, &nid)
		want[nid] = append(want[nid], iid)
	}
	rows.Close()
	cc, err := client.New(testenv.Containerd(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i, ns := range c.nodeNS {
		if c.lost[i] {
			continue
		}
		nid, err := nodeagent.StoredID(c.nodeDirs[i])
		if err != nil {
			t.Fatal(err)
		}
		ctrs, err := cc.Containers(namespaces.WithNamespace(ctx, ns))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ctr := range ctrs {
			got = append(got, ctr.ID())
		}
		slices.Sort(got)
		exp := slices.Clone(want[nid.String()])
		slices.Sort(exp)
		if !sameIDs(got, exp) {
			t.Errorf("node %d: containers %v, live instances %v", i+1, got, exp)
		}
		_, _, prefix := nodeagent.SimulatedNames(nid)
		var nets []string
		for _, n := range netnsWithPrefix(t, prefix) {
			nets = append(nets, strings.TrimPrefix(n, prefix))
		}
		slices.Sort(nets)
		if !sameIDs(nets, exp) {
			t.Errorf("node %d: instance network namespaces %v, live instances %v", i+1, nets, exp)
		}
	}
	// A build may have been attempted again after a kill; exactly one
	// attempt succeeded and none is left running.
	var succeeded, running, images int
	c.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status IN ('queued', 'running')) FROM builds WHERE deployment_id = $1`, dep).Scan(&succeeded, &running)
	c.pool.QueryRow(ctx, `SELECT count(*) FROM images i JOIN deployments d ON d.image_id = i.id WHERE d.id = $1`, dep).Scan(&images)
	if succeeded != 1 || running != 0 || images != 1 {
		t.Errorf("deployment has %d succeeded and %d unfinished builds and %d images, want 1, 0 and 1", succeeded, running, images)
	}
	return live
}

// taskPIDs maps each container on node i to its task's process id.
func (c *cluster) taskPIDs(i int) map[string]uint32 {
	c.t.Helper()
	cc, err := client.New(testenv.Containerd(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cc.Close()
	ctx := namespaces.WithNamespace(context.Background(), c.nodeNS[i])
	ctrs, err := cc.Containers(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, ctr := range ctrs {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue
		}
		out[ctr.ID()] = task.Pid()
	}
	return out
}

// sameIDs compares container ids and namespace suffixes with instance ids
// (either may carry a prefix of its own kind).
func sameIDs(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasSuffix(got[i], want[i]) {
			return false
		}
	}
	return true
}

// appArchive is the user's repository: a Dockerfile and a prebuilt static
// server, as a CLI would upload it.
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

func upload(t *testing.T, e config.S3, data []byte) string {
	t.Helper()
	u, _ := url.Parse(e.Endpoint)
	mc, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(e.AccessKeyID, e.SecretAccessKey.Reveal(), "")})
	if err != nil {
		t.Fatal(err)
	}
	key := "chaos-uploads/" + id.New().String() + ".tar.gz"
	if _, err := mc.PutObject(context.Background(), e.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	return key
}
