package nodeagent_test

// The node agent for real: containerd + runc, per-instance network
// namespaces with the nftables policy, the node API and the node-proxy.
// The "node" is a network namespace of the test's own, so the policy and
// forwarding never touch the machine running the tests; the agent dials
// instances from inside it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const (
	clusterToken = "node-test-token"
	proxyToken   = "node-proxy-test-token"
)

func randomTag() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// nodeNetns creates the network namespace that plays the node.
func nodeNetns(t *testing.T, name string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (network namespaces)", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testenv.Unavailable(t, "network namespaces (ip netns add)", fmt.Errorf("%v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return "/run/netns/" + name
}

// appImage builds testdata/app into a FROM scratch image in the local registry.
func appImage(t *testing.T) (repo, digest string) {
	t.Helper()
	reg := testenv.Registry(t)
	bk := builder.BuildKit{Addr: testenv.Buildkit(t)}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), ".")
	build.Dir = "testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build app: %v\n%s", err, out)
	}
	img, err := bk.Build(context.Background(), builder.Request{
		ContextDir: dir, Dockerfile: []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n"),
		Repository: "zeitwork-test/agent-app", Tag: "t" + randomTag(), Registry: builder.Registry{Host: reg, Insecure: true},
	}, io.Discard)
	if err != nil {
		t.Fatalf("image: %v", err)
	}
	return img.Repository, img.Digest
}

type agentNode struct {
	t       *testing.T
	api     string
	proxy   string
	rt      *runtime.Runtime
	net     *network.Manager
	cancel  context.CancelFunc
	done    chan error
	dial    nodeproxy.Dialer
	row     node.Node
	regHost string
}

// startAgent runs an agent on the node namespace; everything it makes is
// found again by the next agent started with the same names.
func startAgent(t *testing.T, p *pgxpool.Pool, state, nsPath, tag, ctrNamespace, logDir, reg string, ring *secret.Ring) *agentNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	row, err := nodeagent.Register(ctx, p, ipam.DefaultCluster, state, node.Registration{
		Hostname: "worker-" + tag, InternalAddress: "127.0.0.1:" + tag, CPUMillis: 4000, MemoryMB: 8192, AgentVersion: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(ctx, runtime.Config{
		Address: testenv.Containerd(t), Namespace: ctrNamespace, Owner: row.ID.String(), LogDir: logDir, PlainHTTPRegistries: []string{reg},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := network.DefaultConfig()
	cfg.Table, cfg.LinkPrefix, cfg.NetnsPrefix, cfg.NodeNetns = "zwt"+tag, "zt"+tag[:3], "zwt"+tag+"-", nsPath
	netm, err := network.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := netm.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	dial := nodeproxy.Dialer(network.DialFrom(nsPath))
	policy := nodeagent.DefaultPolicy
	policy.HealthDeadline, policy.StopGrace = 8*time.Second, 2*time.Second
	log := zlog.Discard()
	agent := &nodeagent.Agent{
		Pool: p, Node: row, Observer: rt, Events: rt.Events, Token: clusterToken, ProxyToken: proxyToken, Version: "test", Handler: runtime.HandlerRunc, Dial: dial,
		PollInterval: 2 * time.Second, HeartbeatInterval: time.Second, Log: log,
		Converger: &nodeagent.Converger{
			Pool: p, NodeID: row.ID, Runtime: rt, Network: netm, Probe: nodeagent.HTTPProbe(dial), Control: controlPlane(t, p, row.ID, ring), Policy: policy, Log: log,
		},
	}
	apiL, _ := net.Listen("tcp", "127.0.0.1:0")
	proxyL, _ := net.Listen("tcp", "127.0.0.1:0")
	n := &agentNode{t: t, api: "http://" + apiL.Addr().String(), proxy: "http://" + proxyL.Addr().String(), rt: rt, net: netm, cancel: cancel, done: make(chan error, 1), dial: dial, row: row, regHost: reg}
	go func() { n.done <- agent.Run(ctx, apiL, proxyL) }()
	return n
}

// stop stops the agent process as an upgrade would: instances keep running.
func (n *agentNode) stop() {
	n.t.Helper()
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			n.t.Fatalf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		n.t.Fatal("agent did not stop")
	}
	n.rt.Close()
	n.net.Close()
}

func (n *agentNode) call(method, path string, body any) (int, []byte) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.api+path, rd)
	req.Header.Set("Authorization", "Bearer "+clusterToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (n *agentNode) instance(iid uuid.UUID) nodeagent.Instance {
	n.t.Helper()
	code, b := n.call("GET", "/v1/instances/"+iid.String(), nil)
	if code != 200 {
		n.t.Fatalf("GET instance: %d %s", code, b)
	}
	var in nodeagent.Instance
	json.Unmarshal(b, &in)
	return in
}

func (n *agentNode) waitState(iid uuid.UUID, want instance.State, within time.Duration) nodeagent.Instance {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for {
		in := n.instance(iid)
		if in.State == want {
			return in
		}
		if in.State == instance.StateFailed || time.Now().After(deadline) {
			n.t.Fatalf("instance %s is %s (%v), want %s", iid, in.State, in.StateReason, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// viaProxy sends a request through the node-proxy, as the edge does.
func (n *agentNode) viaProxy(iid uuid.UUID, path string) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest("GET", n.proxy+path, nil)
	req.Host = "app.example.com"
	req.Header.Set(nodeproxy.HeaderInstance, iid.String())
	req.Header.Set(nodeproxy.HeaderToken, proxyToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// world is one node with its agent and a database to drive it.
type world struct {
	t    *testing.T
	pool *pgxpool.Pool
	// agentPool is the node agent's own database user: agents run with
	// their role's grants only, as in production.
	agentPool *pgxpool.Pool
	tag       string
	nsPath    string
	ring      *secret.Ring
	repo      string
	digest    string
	state     string
	logDir    string
	ctrNS     string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, tag: randomTag()}
	w.nsPath = nodeNetns(t, "zwt"+w.tag+"-node")
	w.repo, w.digest = appImage(t)
	url := testdb.NewURL(t)
	w.pool, w.agentPool = testdb.Pool(t, url), testdb.Pool(t, testdb.As(t, url, dbrole.NodeAgent))
	w.ring, _ = secret.ParseRing(secret.NewKey("k1"))
	w.state, w.logDir, w.ctrNS = t.TempDir(), t.TempDir(), "zw-test-agent-"+w.tag
	testenv.RemoveContainerdNamespace(t, w.ctrNS)
	t.Cleanup(func() {
		// Leave nothing running: stop every instance and the policy.
		owner, _ := os.ReadFile(filepath.Join(w.state, "node-id"))
		rt, err := runtime.New(context.Background(), runtime.Config{Address: testenv.Containerd(t), Namespace: w.ctrNS, Owner: strings.TrimSpace(string(owner)), LogDir: w.logDir})
		if err == nil {
			list, _ := rt.List(context.Background())
			for _, s := range list {
				rt.Stop(context.Background(), s.InstanceID, time.Second)
			}
			rt.Close()
		}
		cfg := network.DefaultConfig()
		cfg.Table, cfg.LinkPrefix, cfg.NetnsPrefix, cfg.NodeNetns = "zwt"+w.tag, "zt"+w.tag[:3], "zwt"+w.tag+"-", w.nsPath
		if m, err := network.New(cfg); err == nil {
			m.Reset(context.Background())
			m.Close()
		}
	})
	return w
}

func (w *world) agent() *agentNode {
	return startAgent(w.t, w.agentPool, w.state, w.nsPath, w.tag, w.ctrNS, w.logDir, testenv.Registry(w.t), w.ring)
}

// deployment creates a project with vars and a deployment of digest.
func (w *world) deployment(digest string, vars map[string]string) uuid.UUID {
	w.t.Helper()
	ctx := context.Background()
	proj, img, dep := testdb.Project(w.t, w.pool), id.New(), id.New()
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`UPDATE projects SET health_check_path = '/healthz' WHERE id = $1`, []any{proj}},
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, $4, $5)`, []any{img, proj, w.repo, dep.String(), digest}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, []any{dep, proj, img}},
	} {
		if _, err := w.pool.Exec(ctx, s.q, s.args...); err != nil {
			w.t.Fatalf("%s: %v", s.q, err)
		}
	}
	for name, value := range vars {
		ct, kid := w.ring.Seal([]byte(value), secret.EnvContext(proj, name))
		if _, err := db.New(w.pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: name, ValueCiphertext: ct, KeyID: kid}); err != nil {
			w.t.Fatal(err)
		}
	}
	return dep
}

func (n *agentNode) create(dep uuid.UUID, memoryMB int) uuid.UUID {
	n.t.Helper()
	code, b := n.call("POST", "/v1/instances", map[string]any{"deployment_id": dep, "port": 8080, "cpu_millis": 250, "memory_mb": memoryMB})
	if code != 201 {
		n.t.Fatalf("create instance: %d %s", code, b)
	}
	var in nodeagent.Instance
	json.Unmarshal(b, &in)
	return in.ID
}

// waitFinal waits until the instance reaches one of states.
func (n *agentNode) waitFinal(iid uuid.UUID, within time.Duration, states ...instance.State) nodeagent.Instance {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for {
		in := n.instance(iid)
		for _, s := range states {
			if in.State == s {
				return in
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("instance %s is %s (%v), want one of %v", iid, in.State, in.StateReason, states)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAgentRunsIsolatedInstancesAndSurvivesRestart(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	dep := w.deployment(w.digest, map[string]string{"GREETING": "hello from the vault"})

	n := w.agent()

	// Bad requests are refused before anything is written.
	if code, b := n.call("POST", "/v1/instances", map[string]any{"deployment_id": id.New(), "port": 8080, "cpu_millis": 250, "memory_mb": 128}); code != 404 {
		t.Fatalf("unknown deployment: %d %s", code, b)
	}
	if code, b := n.call("POST", "/v1/instances", map[string]any{"deployment_id": dep, "port": 0, "cpu_millis": 250, "memory_mb": 128}); code != 422 {
		t.Fatalf("port 0: %d %s", code, b)
	}

	start := time.Now()
	ids := []uuid.UUID{n.create(dep, 128), n.create(dep, 128)}
	a := n.waitState(ids[0], instance.StateHealthy, 60*time.Second)
	b := n.waitState(ids[1], instance.StateHealthy, 60*time.Second)
	t.Logf("two instances healthy %s after they were requested", time.Since(start).Round(time.Millisecond))
	if a.Runtime == nil || a.Runtime.State != string(runtime.StateRunning) || a.Runtime.PID == 0 {
		t.Fatalf("instance A as containerd sees it: %+v", a.Runtime)
	}
	// The heartbeat carries what the node observes.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		row, err := node.Store{DB: w.pool}.Get(ctx, n.row.ID)
		if err != nil {
			t.Fatal(err)
		}
		if row.InstancesRunning != nil && *row.InstancesRunning == 2 && row.AvailableMemoryMB != nil && *row.AvailableMemoryMB > 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("heartbeat did not report 2 running instances and free memory: %v %v", row.InstancesRunning, row.AvailableMemoryMB)
		}
	}
	// The node API wants the cluster token.
	if resp, err := http.Get(n.api + "/v1/node/info"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("node API without a token: %v %v", resp, err)
	}

	// The node-proxy reaches each instance at its own address, with the
	// project's decrypted variable in its environment.
	for _, in := range []nodeagent.Instance{a, b} {
		code, body := n.viaProxy(in.ID, "/")
		if code != 200 || body != in.Addr.String()+" hello from the vault" {
			t.Fatalf("via node-proxy to %s: %d %q", in.Addr.String(), code, body)
		}
	}
	// Each instance is named by its whole id: two created together are
	// told apart (the first 8 hex digits of a UUIDv7 are its timestamp).
	for _, in := range []nodeagent.Instance{a, b} {
		if code, body := n.viaProxy(in.ID, "/hostname"); code != 200 || body != "instance-"+in.ID.String() {
			t.Fatalf("hostname of %s: %d %q", in.ID, code, body)
		}
	}
	// What the instance printed is captured and served by the node API.
	if code, logs := n.call("GET", "/v1/instances/"+a.ID.String()+"/logs", nil); code != 200 || !strings.Contains(string(logs), "listening on port 8080") {
		t.Fatalf("logs: %d %q", code, logs)
	}

	// A cannot reach B; the node can.
	code, body := n.viaProxy(a.ID, "/dial?addr="+net.JoinHostPort(b.Addr.String(), "8080"))
	if code != 200 || !strings.HasPrefix(body, "error") {
		t.Fatalf("instance A reached instance B: %d %q", code, body)
	}
	// Refused at once with a TCP reset, not after retransmitted SYNs.
	if !strings.Contains(body, "connection refused") {
		t.Fatalf("instance A to instance B: %q, want connection refused", body)
	}
	c, err := n.dial(ctx, "tcp", net.JoinHostPort(b.Addr.String(), "8080"))
	if err != nil {
		t.Fatalf("the node cannot reach B: %v", err)
	}
	c.Close()

	// Restart the agent: the instances keep running, the same processes.
	n.stop()
	n = w.agent()
	again := n.waitState(a.ID, instance.StateHealthy, 30*time.Second)
	if again.Runtime.PID != a.Runtime.PID {
		t.Fatalf("agent restart restarted instance A: pid %d → %d", a.Runtime.PID, again.Runtime.PID)
	}
	if code, body := n.viaProxy(b.ID, "/"); code != 200 || !strings.HasPrefix(body, b.Addr.String()) {
		t.Fatalf("after the agent restart: %d %q", code, body)
	}

	// Stop A through the node API: it ends stopped and its namespace goes.
	if code, b := n.call("PUT", "/v1/instances/"+a.ID.String()+"/state", map[string]any{"state": instance.DesiredStopped}); code != 200 {
		t.Fatalf("stop: %d %s", code, b)
	}
	stopped := n.waitState(a.ID, instance.StateStopped, 30*time.Second)
	if stopped.Runtime.State != string(runtime.StateMissing) {
		t.Fatalf("stopped instance still in containerd: %+v", stopped.Runtime)
	}
	if _, err := os.Stat("/run/netns/zwt" + w.tag + "-" + a.ID.String()); !os.IsNotExist(err) {
		t.Fatalf("stopped instance's network namespace remains: %v", err)
	}
	if code, _ := n.viaProxy(a.ID, "/"); code != 502 {
		t.Fatalf("node-proxy to a stopped instance: %d", code)
	}
	if code, b := n.call("PUT", "/v1/instances/"+a.ID.String()+"/state", map[string]string{"state": "paused"}); code != 422 {
		t.Fatalf("unknown state: %d %s", code, b)
	}
	if code, _ := n.call("DELETE", "/v1/instances/"+a.ID.String(), nil); code != 204 {
		t.Fatalf("delete stopped instance: %d", code)
	}
	n.stop()
}

// TestAgentReportsBadInstances: each kind of broken instance ends in a
// state with the reason, never a stuck "starting", while a good instance
// beside them keeps serving.
func TestAgentReportsBadInstances(t *testing.T) {
	w := newWorld(t)
	n := w.agent()
	defer n.stop()

	good := n.create(w.deployment(w.digest, nil), 128)
	noImage := n.create(w.deployment("sha256:"+strings.Repeat("0", 64), nil), 128)
	crashes := n.create(w.deployment(w.digest, map[string]string{"EXIT_CODE": "3"}), 128)
	tooSmall := n.create(w.deployment(w.digest, map[string]string{"ALLOC_MB": "96"}), 32)
	silent := n.create(w.deployment(w.digest, map[string]string{"NO_LISTEN": "1"}), 128)

	for _, tc := range []struct {
		name   string
		id     uuid.UUID
		states []instance.State
		reason string
	}{
		{"image that does not exist", noImage, []instance.State{instance.StateFailed}, "cannot pull image"},
		{"command that exits at once", crashes, []instance.State{instance.StateUnhealthy, instance.StateFailed}, "exited with code 3"},
		{"memory limit too small", tooSmall, []instance.State{instance.StateFailed, instance.StateUnhealthy}, "more than its 32 MiB of memory"},
	} {
		in := n.waitFinal(tc.id, 60*time.Second, tc.states...)
		if !strings.Contains(in.StateReason, tc.reason) {
			t.Errorf("%s: %s with reason %v, want it to mention %q", tc.name, in.State, in.StateReason, tc.reason)
		}
		t.Logf("%s → %s: %s", tc.name, in.State, in.StateReason)
	}
	if in := n.waitState(good, instance.StateHealthy, 60*time.Second); in.Runtime.State != string(runtime.StateRunning) {
		t.Fatalf("the good instance: %+v", in)
	}
	// An app that never listens stays "starting" only until the health
	// deadline (8 s in these tests), then is reported unhealthy.
	in := n.waitFinal(silent, 90*time.Second, instance.StateUnhealthy)
	if !strings.Contains(in.StateReason, "health check GET /healthz on port 8080 failed") {
		t.Fatalf("silent app: %v", in.StateReason)
	}
}
