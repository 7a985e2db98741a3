package nodeagent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

var cluster = ipam.DefaultCluster

func testNode(i int) node.Registration {
	return node.Registration{
		Hostname: fmt.Sprintf("worker-%d", i), InternalAddress: fmt.Sprintf("100.64.0.%d:7000", i),
		Region: "eu-central-1", CPUMillis: 4000, MemoryMB: 8192, AgentVersion: "test",
	}
}

func TestRegisterKeepsIdentityAcrossRestarts(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	state := t.TempDir()

	first, err := nodeagent.Register(ctx, pool, cluster, state, testNode(1))
	if err != nil {
		t.Fatal(err)
	}
	if !cluster.Contains(first.Prefix.Addr()) || first.Prefix.Bits() != 64 || first.Status != node.StatusActive {
		t.Fatalf("registered %+v", first)
	}
	again, err := nodeagent.Register(ctx, pool, cluster, state, testNode(1))
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.Prefix != first.Prefix {
		t.Fatalf("restart changed identity: %s %s → %s %s", first.ID, first.Prefix, again.ID, again.Prefix)
	}

	// The state directory is lost (disk replaced): the node is recognised
	// by its address and its old id is written back.
	fresh := t.TempDir()
	recovered, err := nodeagent.Register(ctx, pool, cluster, fresh, testNode(1))
	if err != nil {
		t.Fatal(err)
	}
	saved, _ := os.ReadFile(filepath.Join(fresh, "node-id"))
	if recovered.ID != first.ID || string(saved) != first.ID.String()+"\n" {
		t.Fatalf("recovered %s (file %q), want %s", recovered.ID, saved, first.ID)
	}
}

func TestManyNodesRegisteringAtOnceGetDistinctPrefixes(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	const nodes = 24
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		prefixes = map[netip.Prefix]int{}
	)
	for i := range nodes {
		wg.Go(func() {
			row, err := nodeagent.Register(ctx, pool, cluster, t.TempDir(), testNode(i+1))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			prefixes[row.Prefix]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(prefixes) != nodes {
		t.Fatalf("%d nodes got %d distinct /64s: %v", nodes, len(prefixes), prefixes)
	}
	rows, err := db.New(pool).NodeList(ctx)
	if err != nil || len(rows) != nodes {
		t.Fatalf("%d node rows (%v), want %d", len(rows), err, nodes)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	if _, err := nodeagent.Register(ctx, pool, netip.MustParsePrefix("10.0.0.0/8"), t.TempDir(), testNode(1)); err == nil {
		t.Fatal("an IPv4 cluster prefix was accepted")
	}
	state := t.TempDir()
	os.WriteFile(filepath.Join(state, "node-id"), []byte("garbage"), 0o600)
	if _, err := nodeagent.Register(ctx, pool, cluster, state, testNode(1)); err == nil {
		t.Fatal("a corrupt node id file was accepted")
	}
}
