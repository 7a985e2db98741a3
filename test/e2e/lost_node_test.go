package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestLostNodeIsReplaced: a node whose agent stops heartbeating is
// declared dead and its instance is replaced on the remaining nodes, so
// the active deployment keeps three healthy instances.
func TestLostNodeIsReplaced(t *testing.T) {
	p := startPlatform(t, 2, "NODE_HEARTBEAT_DEADLINE=10s")

	// A third node whose agent this test can stop.
	secrets, _ := os.ReadFile(filepath.Join(p.state, "secrets.env"))
	lines := strings.Split(string(secrets), "\n")
	// Named like the platform's own nodes, so it shares nothing on the host
	// with another platform.
	name := devenv.NodeName(p.prefix, 3)
	ns, err := devenv.EnsureNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	ctrNS := name
	logDir, agentState := t.TempDir(), t.TempDir()
	proxy := fmt.Sprintf("127.0.0.1:%d", p.base+103)
	cfg, err := config.ParseFrom[config.NodeAgent](devenv.Environment(map[string]string{
		"DATABASE_URL": p.dbURL, "DATABASE_MAX_CONNS": "5",
		// More room than the simulated nodes: the scheduler ranks it first.
		"NODE_INTERNAL_ADDRESS": proxy, "NODE_STATE_DIR": agentState, "NODE_CPU_MILLIS": "4000", "NODE_MEMORY_MB": "8192",
		"CLUSTER_TOKEN": p.secrets["CLUSTER_TOKEN"], "NODE_PROXY_TOKEN": p.secrets["NODE_PROXY_TOKEN"], "NODEAGENT_ADDR": fmt.Sprintf("127.0.0.1:%d", p.base+3), "NODEPROXY_ADDR": proxy, "NETWORK_NODE_NETNS": ns,
		"CONTAINERD_ADDR": testenv.Containerd(t), "CONTAINERD_NAMESPACE": ctrNS, "RUNTIME_HANDLER": runtime.HandlerRunc, "INSTANCE_LOG_DIR": logDir,
		"REGISTRY_ADDR": testenv.Registry(t), "SECRETS_KEYS": strings.TrimPrefix(lines[1], "SECRETS_KEYS="),
		"NODE_HEARTBEAT_INTERVAL": "1s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	agentPool, err := pgxpool.New(context.Background(), cfg.Database.URL.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, kill := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- nodeagent.Main(agentCtx, cfg, agentPool, "test", zlog.Discard()) }()
	t.Cleanup(func() {
		kill()
		defer agentPool.Close() // waits for the agent to hand its connections back
		// Its instances outlive it, as instances do: stop them here.
		// The agent labels them with its node id, kept in its state dir.
		owner, err := nodeagent.StoredID(agentState)
		if err != nil {
			return // it never registered: it started nothing
		}
		if rt, err := runtime.New(context.Background(), runtime.Config{Address: cfg.Containerd.Addr, Namespace: ctrNS, Owner: owner.String(), LogDir: logDir}); err == nil {
			list, _ := rt.List(context.Background())
			for _, s := range list {
				rt.Stop(context.Background(), s.InstanceID, time.Second)
			}
			rt.Close()
		}
	})
	p.wait(30*time.Second, "the third node to register", func() bool {
		nodes, _ := p.q.NodeList(context.Background())
		return len(nodes) == 3
	})

	dep, _ := p.deploy()
	ctx := context.Background()
	var lostNode, lostInstance [16]byte
	for _, in := range mustLive(t, p, dep) {
		n, _ := node.Store{DB: p.pool}.Get(ctx, in.NodeID)
		if n.InternalAddress == proxy {
			lostNode, lostInstance = n.ID, in.ID
		}
	}
	if lostNode == [16]byte{} {
		nodes, _ := p.q.NodeList(ctx)
		var seen []string
		for _, n := range nodes {
			seen = append(seen, fmt.Sprintf("%s %s %s", n.InternalAddress, n.Status, time.Since(n.LastHeartbeatAt).Round(time.Millisecond)))
		}
		t.Fatalf("no instance on the third node: the deployment is not spread over three nodes (%v)", seen)
	}

	kill() // the node goes silent
	<-agentDone
	killed := time.Now()
	p.wait(90*time.Second, "the lost instance to be replaced by a healthy one elsewhere", func() bool {
		live := mustLive(t, p, dep)
		healthy := 0
		for _, in := range live {
			if in.NodeID == lostNode {
				return false
			}
			if in.State == instance.StateHealthy {
				healthy++
			}
		}
		return healthy == 3
	})
	t.Logf("node silent → replacement healthy: %s (heartbeat deadline 10 s, healing every 5 s)", time.Since(killed).Round(time.Millisecond))
	n, _ := node.Store{DB: p.pool}.Get(ctx, lostNode)
	old, _ := instance.Store{DB: p.pool}.Get(ctx, lostInstance)
	if n.Status != node.StatusDead || old.State != instance.StateFailed || !strings.Contains(old.StateReason, "stopped heartbeating") {
		t.Fatalf("node %s, lost instance %s %v", n.Status, old.State, old.StateReason)
	}
	for _, in := range mustLive(t, p, dep) {
		p.viaNodeProxy(in)
	}
}

func mustLive(t *testing.T, p *platform, dep [16]byte) []instance.Instance {
	t.Helper()
	live, err := instance.Store{DB: p.pool}.ListLive(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	return live
}
