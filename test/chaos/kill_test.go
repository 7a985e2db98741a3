package chaos

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
)

// killMidDeploy starts a deployment, waits until midway says the role is
// in the middle of its part of it, kills the role with SIGKILL, starts it
// again, and checks that the deployment converges with nothing lost,
// doubled or leaked. It returns the time from the kill to active.
func killMidDeploy(t *testing.T, c *cluster, victim *proc, what string, midway func(dep uuid.UUID) bool) time.Duration {
	t.Helper()
	dep := c.startDeploy()
	c.wait(3*time.Minute, what, func() bool { return midway(dep) })
	status := c.status(dep)
	victim.kill9()
	killed := time.Now()
	t.Logf("killed %s (SIGKILL) while the deployment was %s", victim.name, status)
	victim.start()
	c.waitActive(dep, 3*time.Minute)
	took := time.Since(killed)
	t.Logf("kill -9 %s → deployment active: %s", victim.name, took.Round(time.Millisecond))
	c.converged(dep)
	return took
}

// TestKillBuilderMidBuild: the builder dies while it builds; a builder
// started again finishes the build (its task is rescued, the dead one's
// lease runs out), once, and the deployment goes active.
func TestKillBuilderMidBuild(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3})
	killMidDeploy(t, c, c.builder, "the builder to be building", func(dep uuid.UUID) bool {
		var n int
		c.pool.QueryRow(context.Background(), `SELECT count(*) FROM builds WHERE deployment_id = $1 AND status = 'running'`, dep).Scan(&n)
		return n > 0
	})
}

// TestKillOperatorMidDeploy: the operator dies once it has placed the
// deployment's instances and before they are all healthy; the operator
// started again takes the deployment to active without placing it twice.
func TestKillOperatorMidDeploy(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3})
	killMidDeploy(t, c, c.operator, "the operator to place instances", func(dep uuid.UUID) bool {
		var n int
		c.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE deployment_id = $1`, dep).Scan(&n)
		return n > 0
	})
}

// TestKillNodeAgentMidDeploy: a node agent dies while it starts its
// instance of a new deployment; started again, it adopts or replaces what
// it had begun, and no container or network namespace is left over.
func TestKillNodeAgentMidDeploy(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3})
	killMidDeploy(t, c, c.nodes[0], "node1 to start its instance", func(dep uuid.UUID) bool {
		var n int
		c.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances i JOIN nodes n ON n.id = i.node_id
			WHERE i.deployment_id = $1 AND n.internal_address = $2 AND i.state IN ('pulling', 'starting')`, dep, c.nodes[0].addr()).Scan(&n)
		return n > 0
	})
}

// TestNodeAgentRestartKeepsInstances: a node agent stopped (SIGTERM) and
// then killed (SIGKILL), each time started again, adopts its running
// instances: the same containers with the same processes, no instance
// restarted or replaced. (The agent-level proof is internal/nodeagent's
// TestAgentRunsIsolatedInstancesAndSurvivesRestart and internal/runtime's
// TestAgentRestartKeepsInstancesAndLogs; this is the whole platform's.)
func TestNodeAgentRestartKeepsInstances(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3})
	dep := c.startDeploy()
	c.waitActive(dep, 3*time.Minute)
	c.converged(dep)
	before := c.taskPIDs(0)
	if len(before) != 1 {
		t.Fatalf("node1 runs %d instances, want 1", len(before))
	}
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		if how == "SIGTERM" {
			c.nodes[0].stop()
		} else {
			c.nodes[0].kill9()
		}
		down := time.Now()
		c.nodes[0].start()
		// A heartbeat from the new process, then a convergence pass or two.
		c.wait(30*time.Second, "node1 to heartbeat again", func() bool {
			var n int
			c.pool.QueryRow(context.Background(), `SELECT count(*) FROM nodes WHERE internal_address = $1 AND last_heartbeat_at > $2`, c.nodes[0].addr(), down).Scan(&n)
			return n == 1
		})
		time.Sleep(3 * time.Second)
		after := c.taskPIDs(0)
		for ctr, pid := range before {
			if after[ctr] != pid {
				t.Fatalf("after a %s restart of its agent, instance %s runs as pid %d, was %d", how, ctr, after[ctr], pid)
			}
		}
		if len(after) != len(before) {
			t.Fatalf("after a %s restart of its agent, node1 runs %v, was %v", how, after, before)
		}
		if c.status(dep) != deployment.StatusActive {
			t.Fatalf("deployment %s after the agent's %s restart", c.status(dep), how)
		}
		c.converged(dep)
		t.Logf("agent %s-restarted: instance %v kept its process", how, before)
	}
}

func killPID(pid uint32) {
	if p, err := os.FindProcess(int(pid)); err == nil {
		p.Signal(syscall.SIGKILL)
	}
}
