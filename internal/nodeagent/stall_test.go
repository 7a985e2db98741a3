package nodeagent_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// stalledRegistry is a TCP listener that accepts connections and never
// says a word: the registry that froze a node's convergence.
func stalledRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return l.Addr().String()
}

// agentWith is startAgent with the runtime's and the policy's settings
// adjusted.
func (w *world) agentWith(rtCfg func(*runtime.Config), pol func(*nodeagent.Policy)) *agentNode {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reg := testenv.Registry(t)
	row, err := nodeagent.Register(ctx, w.pool, ipam.DefaultCluster, w.state, node.Registration{
		Hostname: "worker-" + w.tag, InternalAddress: "127.0.0.1:" + w.tag, CPUMillis: 4000, MemoryMB: 8192, AgentVersion: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	rc := runtime.Config{Address: testenv.Containerd(t), Namespace: w.ctrNS, Owner: row.ID.String(), LogDir: w.logDir, PlainHTTPRegistries: []string{reg}}
	rtCfg(&rc)
	rt, err := runtime.New(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := network.DefaultConfig()
	cfg.Table, cfg.LinkPrefix, cfg.NetnsPrefix, cfg.NodeNetns = "zwt"+w.tag, "zt"+w.tag[:3], "zwt"+w.tag+"-", w.nsPath
	netm, err := network.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := netm.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	dial := nodeproxy.Dialer(network.DialFrom(w.nsPath))
	policy := nodeagent.DefaultPolicy
	policy.HealthDeadline, policy.StopGrace = 8*time.Second, 2*time.Second
	pol(&policy)
	log := zlog.Discard()
	agent := &nodeagent.Agent{
		Pool: w.pool, Node: row, Observer: rt, Events: rt.Events, Token: clusterToken, Version: "test", Handler: runtime.HandlerRunc, Dial: dial,
		PollInterval: 2 * time.Second, HeartbeatInterval: time.Second, Log: log,
		Converger: &nodeagent.Converger{
			Pool: w.pool, NodeID: row.ID, Runtime: rt, Network: netm, Probe: nodeagent.HTTPProbe(dial), Policy: policy, Log: log,
		},
	}
	apiL, _ := net.Listen("tcp", "127.0.0.1:0")
	proxyL, _ := net.Listen("tcp", "127.0.0.1:0")
	n := &agentNode{t: t, api: "http://" + apiL.Addr().String(), proxy: "http://" + proxyL.Addr().String(), rt: rt, net: netm, cancel: cancel, done: make(chan error, 1), dial: dial, row: row, regHost: reg}
	go func() { n.done <- agent.Run(ctx, apiL, proxyL) }()
	return n
}

// TestAgentConvergesPastAStalledRegistry: one instance's image is on a
// registry that accepts connections and never answers. Its neighbour on
// the node still goes all the way to healthy, and the stalled one ends
// failed, naming the stall, instead of pulling for ever.
func TestAgentConvergesPastAStalledRegistry(t *testing.T) {
	w := newWorld(t)
	host := stalledRegistry(t)
	n := w.agentWith(func(c *runtime.Config) {
		c.PlainHTTPRegistries = append(c.PlainHTTPRegistries, host)
		c.PullStallTimeout = 3 * time.Second
	}, func(p *nodeagent.Policy) { p.PullWait = 100 * time.Millisecond })
	defer n.stop()

	proj, img, dep := w.deployment(w.digest, nil), id.New(), id.New()
	var projectID string
	if err := w.pool.QueryRow(context.Background(), `SELECT project_id::text FROM deployments WHERE id = $1`, proj).Scan(&projectID); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'stalled', $4)`, []any{img, projectID, host + "/zeitwork-test/stalled", w.digest}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k2', 3, $3)`, []any{dep, projectID, img}},
	} {
		if _, err := w.pool.Exec(context.Background(), q.q, q.args...); err != nil {
			t.Fatalf("%s: %v", q.q, err)
		}
	}
	stuck := n.create(dep, 128)
	good := n.create(proj, 128)

	n.waitState(good, instance.StateHealthy, 60*time.Second)
	in := n.waitFinal(stuck, 90*time.Second, instance.StateFailed)
	if !strings.Contains(in.StateReason, "registry stalled") {
		t.Fatalf("the stalled instance failed with %q, want the stall named", in.StateReason)
	}
	t.Logf("stalled instance: %s", in.StateReason)
}
