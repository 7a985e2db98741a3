package chaos

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// TestNodeLostUnderLoad: a node carrying an instance of the active
// deployment is lost (its agent and node-proxy killed, its instance's
// process killed) while clients hit the app through the edge. The edge
// stops sending to it and the operator replaces the instance on another
// node; no request fails once the heartbeat deadline has passed. The
// failures before it (if any) are counted and reported.
func TestNodeLostUnderLoad(t *testing.T) {
	const deadline = 10 * time.Second // NODE_HEARTBEAT_DEADLINE of startCluster
	c := startCluster(t, clusterOpts{nodes: 4})
	dep := c.startDeploy()
	c.waitActive(dep, 3*time.Minute)
	ctx := context.Background()
	victim := -1
	var lostNode uuid.UUID
	for _, in := range mustLive(t, c, dep) {
		n, _ := node.Store{DB: c.pool}.Get(ctx, in.NodeID)
		for i, p := range c.nodes {
			if p.addr() == n.InternalAddress && victim < 0 {
				victim, lostNode = i, n.ID
			}
		}
	}
	if victim < 0 {
		t.Fatal("no instance on a node of this cluster")
	}
	l := c.loadThroughEdge()
	time.Sleep(2 * time.Second)

	pids := c.taskPIDs(victim)
	c.lost[victim] = true
	c.nodes[victim].kill9()
	for _, pid := range pids {
		// The instance dies with its node.
		killPID(pid)
	}
	lost := time.Now()
	c.wait(90*time.Second, "the lost instance to be replaced by a healthy one elsewhere", func() bool {
		healthy := 0
		for _, in := range mustLive(t, c, dep) {
			if in.NodeID == lostNode {
				return false
			}
			if in.State == instance.StateHealthy {
				healthy++
			}
		}
		return healthy == 3
	})
	replaced := time.Since(lost)
	time.Sleep(3 * time.Second) // requests after the replacement, too
	ok, failed := l.stop()
	var early, late []string
	for _, f := range failed {
		at, _ := time.Parse("15:04:05.000", strings.Fields(f)[0])
		at = time.Date(lost.Year(), lost.Month(), lost.Day(), at.Hour(), at.Minute(), at.Second(), at.Nanosecond(), lost.Location())
		if at.Sub(lost) > deadline {
			late = append(late, f)
		} else {
			early = append(early, f)
		}
	}
	t.Logf("node lost → replacement healthy: %s; through the edge: %d answered, %d failed within the heartbeat deadline (%s), %d after",
		replaced.Round(time.Millisecond), ok, len(early), deadline, len(late))
	if len(early) > 0 {
		t.Logf("first failure within the deadline: %s", early[0])
	}
	if len(late) > 0 {
		t.Fatalf("%d requests failed after the heartbeat deadline; first: %s", len(late), late[0])
	}
	n, _ := node.Store{DB: c.pool}.Get(ctx, lostNode)
	if n.Status != node.StatusDead {
		t.Fatalf("the lost node is %s", n.Status)
	}
	c.converged(dep)
}

func mustLive(t *testing.T, c *cluster, dep uuid.UUID) []instance.Instance {
	t.Helper()
	live, err := instance.Store{DB: c.pool}.ListLive(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	return live
}
