package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// procHost is a node of the cluster as bootstrap's rollout sees it: its
// units are the node agent's process, restarted as systemd would (stop,
// then start), and its files are in memory.
type procHost struct {
	c     *cluster
	i     int
	files map[string][]byte
	// restarted: when the agent was restarted, and what was still on the
	// node at that moment.
	restarted time.Time
	leftOn    int
}

func (h *procHost) SHA256s(_ context.Context, paths []string) ([]string, error) {
	out := make([]string, len(paths))
	for i, p := range paths {
		if d, ok := h.files[p]; ok {
			sum := sha256.Sum256(d)
			out[i] = hex.EncodeToString(sum[:])
		}
	}
	return out, nil
}

func (h *procHost) Install(_ context.Context, p string, data []byte, _ os.FileMode) (bool, error) {
	if bytes.Equal(h.files[p], data) {
		return false, nil
	}
	h.files[p] = bytes.Clone(data)
	return true, nil
}

func (h *procHost) Missing(context.Context, []string) ([]string, error) { return nil, nil }
func (h *procHost) InstallPackages(context.Context, []string) error     { return nil }

func (h *procHost) Stopped(_ context.Context, units []string) ([]string, error) {
	if h.c.nodes[h.i].running() {
		return nil, nil
	}
	return units, nil
}

func (h *procHost) Restart(ctx context.Context, _ []string) error {
	// What the edge could still send to this node-proxy: instances that
	// have not stopped.
	h.c.pool.QueryRow(ctx, `SELECT count(*) FROM instances i JOIN nodes n ON n.id = i.node_id
		WHERE n.internal_address = $1 AND i.state NOT IN ('stopped', 'failed')`, h.c.nodes[h.i].addr()).Scan(&h.leftOn)
	h.restarted = time.Now()
	h.c.nodes[h.i].stop()
	h.c.nodes[h.i].start()
	return nil
}

func (h *procHost) Close() error { return nil }

// The installers' operations: a rollout of a worker needs none of them.
func (h *procHost) RestartDaemons(context.Context, []string) error { return nil }
func (h *procHost) Exist(_ context.Context, paths []string) ([]bool, error) {
	return make([]bool, len(paths)), nil
}
func (h *procHost) Unpack(context.Context, string, string) error {
	return errors.New("procHost: no tarballs on a process host")
}
func (h *procHost) Link(context.Context, string, string) error {
	return errors.New("procHost: no links on a process host")
}
func (h *procHost) Bucket(context.Context, bootstrap.S3Access, bool) (bool, error) {
	return false, errors.New("procHost: no object store on a process host")
}
func (h *procHost) Get(context.Context, string) (int, []byte, error) {
	return 0, nil, errors.New("procHost: a worker's rollout asks no health endpoint")
}

// TestUpgradeNodeByNodeFailsNoRequest: bootstrap's rollout restarts the
// node agent of every worker in turn (drain, let the operator move its
// instances, restart, wait for the new agent, undrain) while clients hit
// the app through the edge. Not one request fails; every worker was empty
// when its agent (and with it its node-proxy) went down, and the
// instances moved onto workers upgraded before.
//
// Zero failures alone would not prove the drain: the edge retries a
// refused connection on another instance and the node-proxy finishes its
// requests within a grace period, so this short-request load also passes
// when agents are restarted without draining (measured: 0 of 7932
// failed). Without the drain the test fails on what the drain is for: an
// instance still on the node when its node-proxy goes down (which cuts
// long requests and streams), and no instance moving.
func TestUpgradeNodeByNodeFailsNoRequest(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 4})
	dep := c.startDeploy()
	c.waitActive(dep, 3*time.Minute)
	ctx := context.Background()
	l := c.loadThroughEdge()
	time.Sleep(2 * time.Second)

	var out bytes.Buffer
	r := bootstrap.Rollout{Pool: c.pool, Out: &out, Wait: 2 * time.Minute, Poll: 100 * time.Millisecond}
	undrained := map[uuid.UUID]time.Time{}
	hadInstance := 0
	for i, p := range c.nodes {
		n := nodeAt(t, c, p.addr())
		if slices.ContainsFunc(mustLive(t, c, dep), func(in instance.Instance) bool { return in.NodeID == n.ID }) {
			hadInstance++
		}
		h := &procHost{c: c, i: i, files: map[string][]byte{bootstrap.AppliedMarker: []byte("v1")}}
		began := time.Now()
		if err := r.Worker(ctx, p.name, p.addr(), h, []string{"zeitwork-nodeagent.service"}, []byte("v2")); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		t.Logf("%s: drained and emptied in %s, agent back in %s, undrained (%s in all)", p.name,
			h.restarted.Sub(began).Round(time.Millisecond), time.Since(h.restarted).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
		undrained[n.ID] = time.Now()
		if h.restarted.IsZero() || h.leftOn != 0 {
			t.Fatalf("%s: restarted %v with %d instances still on it", p.name, !h.restarted.IsZero(), h.leftOn)
		}
		if n := nodeAt(t, c, p.addr()); n.Status != node.StatusActive {
			t.Fatalf("%s is %s after its rollout", p.name, n.Status)
		}
	}
	time.Sleep(2 * time.Second) // requests after the last undrain, too
	ok, failed := l.stop()
	t.Logf("rollout of %d workers (%d held an instance when their turn came): %d requests answered through the edge, %d failed\n%s",
		len(c.nodes), hadInstance, ok, len(failed), out.String())
	if len(failed) > 0 {
		t.Fatalf("%d requests failed; first: %s", len(failed), failed[0])
	}
	if hadInstance == 0 {
		t.Fatal("no worker held an instance when its turn came: nothing was moved")
	}
	// The instances that moved went onto workers already upgraded and
	// undrained: they take instances again.
	back := 0
	for _, in := range mustLive(t, c, dep) {
		if at, ok := undrained[in.NodeID]; ok && in.CreatedAt.After(at) {
			back++
		}
	}
	if back == 0 {
		t.Fatal("no instance was placed on a worker after its undrain")
	}
	t.Logf("%d of the 3 instances now run on workers placed after their undrain", back)
	c.converged(dep)
}

func nodeAt(t *testing.T, c *cluster, addr string) node.Node {
	t.Helper()
	ns, err := node.Store{DB: c.pool}.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.InternalAddress == addr {
			return n
		}
	}
	t.Fatalf("no node at %s", addr)
	return node.Node{}
}

var _ bootstrap.Host = (*procHost)(nil)
