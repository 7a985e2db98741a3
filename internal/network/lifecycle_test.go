package network

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"golang.org/x/sys/unix"
)

// TestLifecycle covers adoption, repair, conflicts, teardown and reset.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	a := l.instance(ctx, m)
	b := l.instance(ctx, m)
	aInst := Instance{ID: a.ID, Addr: a.Addr, Port: a.Port}

	snapshot := func() (string, int, uint64) {
		t.Helper()
		link, err := l.node.h.LinkByName(a.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(a.Netns, &st); err != nil {
			t.Fatal(err)
		}
		return l.nftList(), link.Attrs().Index, st.Ino
	}
	rules, idx, ino := snapshot()

	t.Run("setup is idempotent", func(t *testing.T) {
		again, err := m.Setup(ctx, aInst)
		if err != nil {
			t.Fatal(err)
		}
		if again != a.Attachment {
			t.Errorf("second Setup = %+v, want %+v", again, a.Attachment)
		}
		r2, idx2, ino2 := snapshot()
		if r2 != rules || idx2 != idx || ino2 != ino {
			t.Errorf("second Setup changed something: link %d→%d, netns inode %d→%d, rules changed: %v", idx, idx2, ino, ino2, r2 != rules)
		}
		if err := m.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if r3, _, _ := snapshot(); r3 != rules {
			t.Errorf("Apply on a current table changed it:\n%s\nwant:\n%s", r3, rules)
		}
	})

	t.Run("a restarted agent finds and adopts its attachments", func(t *testing.T) {
		m2 := l.manager()
		got, err := m2.List()
		if err != nil {
			t.Fatal(err)
		}
		want := map[uuid.UUID]Attachment{a.ID: a.Attachment, b.ID: b.Attachment}
		if len(got) != len(want) {
			t.Fatalf("List = %+v, want %d attachments", got, len(want))
		}
		for _, g := range got {
			if g != want[g.ID] || !g.Complete() {
				t.Errorf("List has %+v, want %+v", g, want[g.ID])
			}
		}
		adopted, err := m2.Setup(ctx, aInst)
		if err != nil || adopted != a.Attachment {
			t.Errorf("adopting Setup = %+v, %v", adopted, err)
		}
		if r2, idx2, ino2 := snapshot(); r2 != rules || idx2 != idx || ino2 != ino {
			t.Error("adopting Setup changed something")
		}
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(a.Addr, instancePort), dialTimeout); err != nil {
			t.Errorf("after adoption: %v", err)
		}
	})

	t.Run("setup repairs", func(t *testing.T) {
		// A lost host route and a changed port.
		link, _ := l.node.h.LinkByName(a.HostIf)
		if err := l.node.h.RouteDel(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.PrefixFrom(a.Addr, 128))}); err != nil {
			t.Fatal(err)
		}
		moved := aInst
		moved.Port = otherPort
		got, err := m.Setup(ctx, moved)
		if err != nil {
			t.Fatal(err)
		}
		if got.Port != otherPort {
			t.Errorf("port = %d", got.Port)
		}
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(a.Addr, otherPort), dialTimeout); err != nil {
			t.Errorf("node to the new port: %v", err)
		}
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(a.Addr, instancePort), dialTimeout); err == nil {
			t.Error("node still reaches the old port")
		}
		if _, err := m.Setup(ctx, aInst); err != nil {
			t.Fatal(err)
		}
		if r2, _, _ := snapshot(); r2 != rules {
			t.Errorf("after repair and back, rules differ:\n%s\nwant:\n%s", r2, rules)
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		// Another instance given B's address.
		c := id.New()
		_, err := m.Setup(ctx, Instance{ID: c, Addr: b.Addr, Port: instancePort})
		if !errors.Is(err, ErrAddrInUse) {
			t.Errorf("Setup with a taken address: %v, want ErrAddrInUse", err)
		}
		if err := m.Teardown(ctx, c); err != nil {
			t.Fatal(err)
		}
		// An id whose short form is A's.
		twin := id.New()
		copy(twin[12:], a.ID[12:])
		_, err = m.Setup(ctx, Instance{ID: twin, Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), twin), Port: instancePort})
		if !errors.Is(err, ErrConflict) {
			t.Errorf("Setup with a short-id twin: %v, want ErrConflict", err)
		}
		if err := m.Teardown(ctx, twin); err != nil {
			t.Fatal(err)
		}
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(a.Addr, instancePort), dialTimeout); err != nil {
			t.Errorf("A after its twin was refused and torn down: %v", err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, in := range []Instance{
			{ID: uuid.Nil, Addr: a.Addr, Port: 1},
			{ID: id.New(), Addr: netip.MustParseAddr("2001:db8::1"), Port: 1},
			{ID: id.New(), Addr: netip.MustParseAddr("10.0.0.1"), Port: 1},
			{ID: id.New(), Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), id.New()), Port: 0},
		} {
			if _, err := m.Setup(ctx, in); err == nil {
				t.Errorf("Setup(%+v) succeeded", in)
			}
		}
	})

	t.Run("teardown removes everything", func(t *testing.T) {
		if err := m.Teardown(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := l.node.h.LinkByName(a.HostIf); err == nil {
			t.Error("host veth still there")
		}
		if _, err := os.Stat(a.Netns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns still there: %v", err)
		}
		routes, err := l.node.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if p := toPrefix(r.Dst); p.Addr() == a.Addr || p.Addr() == a.Addr4 {
				t.Errorf("route %v still there", p)
			}
		}
		if rules := l.nftList(); strings.Contains(rules, a.HostIf) || !strings.Contains(rules, b.HostIf) {
			t.Errorf("after teardown the table still names %s, or lost %s:\n%s", a.HostIf, b.HostIf, rules)
		}
		if got, _ := m.List(); len(got) != 1 || got[0].ID != b.ID {
			t.Errorf("List = %+v, want only B", got)
		}
		if err := m.Teardown(ctx, a.ID); err != nil {
			t.Errorf("second Teardown: %v", err)
		}
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(b.Addr, instancePort), dialTimeout); err != nil {
			t.Errorf("B after A's teardown: %v", err)
		}
	})

	t.Run("incomplete attachments are listed and repaired", func(t *testing.T) {
		// A crash can leave a namespace without its veth.
		c := id.New()
		path := m.NetnsPath(c)
		if err := createNetns(path, prepareInstanceNetns); err != nil {
			t.Fatal(err)
		}
		got, _ := m.List()
		var found bool
		for _, g := range got {
			if g.ID == c {
				found = true
				if g.Complete() || g.Netns != path {
					t.Errorf("List has %+v for a bare namespace", g)
				}
			}
		}
		if !found {
			t.Errorf("List = %+v, lacks the bare namespace", got)
		}
		cInst := Instance{ID: c, Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), c), Port: instancePort}
		att, err := m.Setup(ctx, cInst)
		if err != nil || !att.Complete() {
			t.Fatalf("Setup on a bare namespace: %+v, %v", att, err)
		}

		// Or a veth not yet named (the kernel takes the alias only after
		// creating the link): recognised by its pairing.
		link, err := l.node.h.LinkByName(att.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.node.h.LinkSetAlias(link, ""); err != nil {
			t.Fatal(err)
		}
		if again, err := l.manager().Setup(ctx, cInst); err != nil || again != att {
			t.Errorf("Setup on an unnamed veth: %+v, %v", again, err)
		}
		if err := l.node.h.LinkSetAlias(link, ""); err != nil {
			t.Fatal(err)
		}
		if err := l.manager().Teardown(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := l.node.h.LinkByName(att.HostIf); err == nil {
			t.Error("Teardown left an unnamed veth of its instance")
		}
	})

	t.Run("reset removes only ours", func(t *testing.T) {
		if err := m.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if rules := l.nftList(); rules != "" {
			t.Errorf("table still there:\n%s", rules)
		}
		if got, _ := m.List(); len(got) != 0 {
			t.Errorf("List after Reset = %+v", got)
		}
		ents, _ := os.ReadDir(l.cfg.NetnsDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), l.cfg.NetnsPrefix) {
				t.Errorf("netns %s still there", e.Name())
			}
		}
		// The lab's own links and namespaces are not ours.
		for _, name := range []string{"uplink0", "lan0", "lo"} {
			if _, err := l.node.h.LinkByName(name); err != nil {
				t.Errorf("Reset removed %s: %v", name, err)
			}
		}
		if _, err := os.Stat(l.node.path); err != nil {
			t.Errorf("Reset removed the node namespace: %v", err)
		}
	})
}

// TestSetupTimings sets up, adopts and tears down a batch of instances, so
// that the cost per instance is in the test log (the agent converges many at
// once, and adopts them all when it restarts).
func TestSetupTimings(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 20
	insts := make([]Instance, n)
	start := time.Now()
	for i := range insts {
		c := id.New()
		insts[i] = Instance{ID: c, Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), c), Port: instancePort}
		if _, err := m.Setup(ctx, insts[i]); err != nil {
			t.Fatal(err)
		}
	}
	setup := time.Since(start) / n

	// A restarted agent: Apply, then Setup for each instance it wants.
	start = time.Now()
	m2 := l.manager()
	if err := m2.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	apply := time.Since(start)
	start = time.Now()
	for _, in := range insts {
		if _, err := m2.Setup(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	adopt := time.Since(start) / n

	start = time.Now()
	for _, in := range insts {
		if err := m2.Teardown(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
	}
	teardown := time.Since(start) / n
	t.Logf("%d instances: setup %v each; after a restart, Apply %v, then adopting Setup %v each; teardown %v each",
		n, setup.Round(time.Millisecond), apply.Round(time.Millisecond), adopt.Round(100*time.Microsecond), teardown.Round(time.Millisecond))
}
