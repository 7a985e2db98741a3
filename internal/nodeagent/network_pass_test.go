package nodeagent_test

// The convergence pass's care of the node's network, with the in-memory
// runtime but a real network manager on a namespace of the test's own: the
// firewall comes back after a flush, and networks of instances that never
// ran are removed.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/network"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// netHarness is the fake-runtime harness with a real network manager.
type netHarness struct {
	*harness
	net    *network.Manager
	nsName string // the node's namespace
	table  string
}

func newNetHarness(t *testing.T) *netHarness {
	t.Helper()
	h := newHarness(t)
	tag := randomTag()
	nsName := "zwt" + tag + "-node"
	nsPath := nodeNetns(t, nsName)
	cfg := network.DefaultConfig()
	cfg.Table, cfg.LinkPrefix, cfg.NetnsPrefix, cfg.NodeNetns = "zwt"+tag, "zt"+tag[:3], "zwt"+tag+"-", nsPath
	m, err := network.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Reset(context.Background())
		m.Close()
	})
	if err := m.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.c.Network = m
	return &netHarness{harness: h, net: m, nsName: nsName, table: cfg.Table}
}

// listenIn listens on the instance's port inside its namespace.
func (h *netHarness) listenIn(t *testing.T, in instance.Instance) {
	t.Helper()
	errc := make(chan error, 1)
	var ln net.Listener
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open(h.net.NetnsPath(in.ID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(int(in.Port)))
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("listen in %s: %v", in.ID, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dial connects from one instance's namespace to another's address.
func (h *netHarness) dial(from, to instance.Instance) error {
	c, err := network.DialFrom(h.net.NetnsPath(from.ID))(context.Background(), "tcp", netip.AddrPortFrom(to.Addr, uint16(to.Port)).String())
	if err == nil {
		c.Close()
	}
	return err
}

func (h *netHarness) nft(t *testing.T, cmd string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", h.nsName, "nft", cmd).CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v: %s", cmd, err, out)
	}
}

// TestPassReappliesTheFirewall: a firewall reload removes the node's table
// (as `nft flush ruleset` does) while forwarding stays on, so instance A
// reaches instance B; one convergence pass later it cannot.
func TestPassReappliesTheFirewall(t *testing.T) {
	h := newNetHarness(t)
	a, b := h.instance(t), h.instance(t)
	h.pass(t)
	a, b = h.state(t, a), h.state(t, b)
	if a.State != instance.StateStarting || b.State != instance.StateStarting {
		t.Fatalf("after one pass: A %s (%s), B %s (%s)", a.State, a.StateReason, b.State, b.StateReason)
	}
	h.listenIn(t, b)
	if err := h.dial(a, b); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("A to B with the policy: %v, want connection refused", err)
	}

	h.nft(t, "delete table inet "+h.table)
	if err := h.dial(a, b); err != nil {
		t.Fatalf("without the table A still cannot reach B (%v): the test would prove nothing", err)
	}
	h.pass(t)
	if err := h.dial(a, b); err == nil {
		t.Fatal("A reaches B after a pass: the firewall was not re-applied")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("A to B after a pass: %v, want connection refused", err)
	}
}

// createFails is the fake runtime refusing to create one instance's
// container, as containerd does for a spec it cannot run: the instance's
// network is set up by then.
type createFails struct {
	*fakeRuntime
	id uuid.UUID
}

func (f createFails) Create(ctx context.Context, s runtime.Spec) error {
	if s.InstanceID == f.id {
		return fmt.Errorf("the runtime refuses %s", s.InstanceID)
	}
	return f.fakeRuntime.Create(ctx, s)
}

// TestPassRemovesNetworksOfInstancesThatNeverRan: the namespace of an
// instance whose container was never created, and one left by an agent
// that died between setting up an instance's network and creating it (its
// instance since gone), are removed by the next passes; a running
// instance's is kept.
func TestPassRemovesNetworksOfInstancesThatNeverRan(t *testing.T) {
	h := newNetHarness(t)
	ctx := context.Background()
	running, broken := h.instance(t), h.instance(t)
	h.c.Runtime = createFails{h.rt, broken.ID}
	h.setHealthy(running, true)

	// Left by a dead agent: set up, never created, and no row any more.
	ghost := id.New()
	if _, err := h.net.Setup(ctx, network.Instance{ID: ghost, Addr: ipam.InstanceAddr(h.node.Prefix, ghost), Port: 8080}); err != nil {
		t.Fatal(err)
	}

	h.pass(t)
	if got := h.state(t, broken); got.State != instance.StateFailed {
		t.Fatalf("broken instance: %s (%s), want failed", got.State, got.StateReason)
	}
	h.pass(t)

	atts, err := h.net.List()
	if err != nil {
		t.Fatal(err)
	}
	have := map[uuid.UUID]bool{}
	for _, att := range atts {
		have[att.ID] = true
	}
	if !have[running.ID] {
		t.Error("the running instance's network was removed")
	}
	for name, iid := range map[string]uuid.UUID{"failed before its container existed": broken.ID, "left by a dead agent": ghost} {
		if have[iid] {
			t.Errorf("network of the instance %s is still there", name)
		}
		if _, err := os.Stat(h.net.NetnsPath(iid)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace of the instance %s: %v, want it gone", name, err)
		}
	}
}
