package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestLostNodeIsReplaced: a node whose agent stops heartbeating is
// declared dead and its instance is replaced on the remaining nodes, so
// the active deployment keeps three healthy instances.
func TestLostNodeIsReplaced(t *testing.T) {
	p := startPlatform(t, 2, "DEV_HEARTBEAT_DEADLINE=10s")

	// A third node whose agent this test can stop.
	secrets, _ := os.ReadFile(filepath.Join(p.state, "secrets.env"))
	lines := strings.Split(string(secrets), "\n")
	ns, err := devenv.EnsureNetns(p.prefix + "3")
	if err != nil {
		t.Fatal(err)
	}
	ctrNS := "zeitwork-e2e-" + filepath.Base(p.state)
	logDir, agentState := t.TempDir(), t.TempDir()
	proxy := fmt.Sprintf("127.0.0.1:%d", p.base+103)
	cfg := config.NodeAgent{
		Log: zlog.Config{Format: zlog.FormatText, Level: 8}, Database: config.Database{URL: config.PostgresURL(p.dbURL), MaxConns: 5},
		// More room than the simulated nodes: the scheduler ranks it first.
		InternalAddress: proxy, StateDir: agentState, CPUMillis: 4000, MemoryMB: 8192, ClusterPrefix: network.DefaultCluster,
		ClusterToken: config.Secret(p.token), APIAddr: fmt.Sprintf("127.0.0.1:%d", p.base+3), ProxyAddr: proxy, NodeNetns: ns,
		ContainerdAddr: testenv.Containerd(t), Namespace: ctrNS, RuntimeHandler: runtime.HandlerRunc, LogDir: logDir,
		PlainHTTP: []string{testenv.Registry(t)}, SecretsKeys: strings.TrimPrefix(lines[1], "SECRETS_KEYS="),
		PollInterval: 5 * time.Second, HeartbeatInterval: time.Second,
	}
	agentCtx, kill := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- nodeagent.Main(agentCtx, cfg, zlog.Discard()) }()
	t.Cleanup(func() {
		kill()
		// Its instances outlive it, as instances do: stop them here.
		// The agent labels them with its node id, kept in its state dir.
		owner, _ := os.ReadFile(filepath.Join(agentState, "node-id"))
		if rt, err := runtime.New(context.Background(), runtime.Config{Address: cfg.ContainerdAddr, Namespace: ctrNS, Owner: strings.TrimSpace(string(owner)), LogDir: logDir}); err == nil {
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
		n, _ := p.q.NodeGetByID(ctx, in.NodeID)
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
			if in.State == "healthy" {
				healthy++
			}
		}
		return healthy == 3
	})
	t.Logf("node silent → replacement healthy: %s (heartbeat deadline 10 s, healing every 5 s)", time.Since(killed).Round(time.Millisecond))
	n, _ := p.q.NodeGetByID(ctx, lostNode)
	old, _ := p.q.InstanceGetByID(ctx, lostInstance)
	if n.Status != "dead" || old.State != "failed" || !strings.Contains(*old.StateReason, "stopped heartbeating") {
		t.Fatalf("node %s, lost instance %s %v", n.Status, old.State, old.StateReason)
	}
	for _, in := range mustLive(t, p, dep) {
		p.viaNodeProxy(in)
	}
}

func mustLive(t *testing.T, p *platform, dep [16]byte) []db.Instance {
	t.Helper()
	live, err := p.q.InstanceListLiveByDeployment(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	return live
}
