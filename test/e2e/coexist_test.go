package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestSuiteLeavesARunningDevPlatformAlone: a developer's `zeitwork dev`
// serves an app while the test suite runs a second platform on the same
// containerd, nftables and kernel, under its own DEV_PREFIX. The second
// platform deploys, replaces its deployment (its
// agents stop and garbage-collect containers) and is torn down; the first
// one's instances keep their processes and answer every request meanwhile.
func TestSuiteLeavesARunningDevPlatformAlone(t *testing.T) {
	dev := startPlatform(t, 1)
	dep, _ := dev.deploy()
	instances := mustLive(t, dev, dep)
	if len(instances) == 0 {
		t.Fatal("the dev platform runs no instance")
	}
	ids := make([]uuid.UUID, 0, len(instances))
	for _, in := range instances {
		ids = append(ids, in.ID)
	}
	before := processes(t, ids)
	load := dev.loadThroughEdge()

	t.Run("second platform", func(t *testing.T) {
		p := startPlatform(t, 2, "RETIRE_GRACE=1s")
		first, _ := p.deploy()
		p.deploy()
		p.wait(60*time.Second, "the first deployment's instances to stop", func() bool {
			var n int
			p.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'stopped'`, first).Scan(&n)
			return n == 3
		})
		// Its cleanup stops every instance it runs, then the platform.
	})

	answered := load.stop()
	total := 0
	for _, n := range answered {
		total += n
	}
	after := processes(t, ids)
	for _, iid := range ids {
		if before[iid] != after[iid] {
			t.Errorf("dev instance %s: process %s before, %s after the second platform", iid, before[iid], after[iid])
		}
	}
	for _, in := range mustLive(t, dev, dep) {
		if instance.State(in.State) != instance.StateHealthy || in.RestartCount != 0 {
			t.Errorf("dev instance %s is %s with %d restarts", in.ID, in.State, in.RestartCount)
		}
	}
	t.Logf("the dev app answered %d requests through its edge while the second platform ran, none failed", total)
}

// processes finds each instance's container in whatever containerd
// namespace it lives in and returns "pid <pid> started <time>" for it: a
// restarted instance has a new process, a recreated one a new start time.
func processes(t *testing.T, ids []uuid.UUID) map[uuid.UUID]string {
	t.Helper()
	c, err := client.New(testenv.Containerd(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]string{}
	for _, iid := range ids {
		for _, ns := range nss {
			nctx := namespaces.WithNamespace(ctx, ns)
			ctr, err := c.LoadContainer(nctx, iid.String())
			if err != nil {
				continue
			}
			labels, err := ctr.Labels(nctx)
			if err != nil {
				t.Fatal(err)
			}
			desc := "no task"
			if task, err := ctr.Task(nctx, nil); err == nil {
				st, _ := task.Status(nctx)
				desc = fmt.Sprintf("%s pid %d", st.Status, task.Pid())
			}
			out[iid] = fmt.Sprintf("%s started %s (namespace %s)", desc, labels["dev.zeitwork.started-at"], ns)
		}
		if out[iid] == "" {
			out[iid] = "no container"
		}
	}
	return out
}

// removeContainersOf kills and deletes every container the nodes' agents
// created (their node id is the runtime's owner label), in whatever
// namespace, and nothing else.
func removeContainersOf(t *testing.T, nodes []db.Node) {
	t.Helper()
	if len(nodes) == 0 {
		return
	}
	defer removeNetnsOf(t, nodes)
	c, err := client.New(testenv.Containerd(t))
	if err != nil {
		t.Errorf("remove leftover containers: %v", err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		t.Errorf("remove leftover containers: %v", err)
		return
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		for _, n := range nodes {
			ctrs, err := c.Containers(nctx, fmt.Sprintf(`labels."dev.zeitwork.owner"==%q`, n.ID.String()))
			if err != nil {
				t.Errorf("list containers in %s: %v", ns, err)
				continue
			}
			for _, ctr := range ctrs {
				if task, err := ctr.Task(nctx, nil); err == nil {
					task.Delete(nctx, client.WithProcessKill)
				}
				if err := ctr.Delete(nctx, client.WithSnapshotCleanup); err != nil {
					t.Errorf("delete leftover container %s in %s: %v", ctr.ID(), ns, err)
				}
				t.Logf("removed leftover container %s in %s", ctr.ID(), ns)
			}
		}
	}
}

// removeNetnsOf deletes the instance network namespaces the agents of
// nodes made and did not tear down (an agent stopped, like dev's, leaves
// its instances' namespaces for the next agent to adopt). Their names
// carry the node's tag, so nothing of another platform is touched.
func removeNetnsOf(t *testing.T, nodes []db.Node) {
	t.Helper()
	for _, n := range nodes {
		if err := nodeagent.RemoveSimulatedNetns(n.ID); err != nil {
			t.Errorf("network namespaces of node %s: %v", n.ID, err)
		}
	}
}
