package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"golang.org/x/sys/unix"
)

const (
	instancePort = 8080
	otherPort    = 9090 // also listened on, but not the instance's port
	nodePort     = 7000 // a node service
	inetPort     = 80
	// Refusals are rejects, so they come back at once; only anti-spoofing
	// drops, and waits out the timeout.
	dialTimeout = 2 * time.Second
)

type testInstance struct {
	Attachment
	fd  int
	srv *server
}

func (l *lab) instance(ctx context.Context, m *Manager) testInstance {
	l.t.Helper()
	i := id.New()
	att, err := m.Setup(ctx, Instance{ID: i, Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), i), Port: instancePort})
	if err != nil {
		l.t.Fatal(err)
	}
	fd, err := openNetns(att.Netns)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { unix.Close(fd) })
	ti := testInstance{Attachment: att, fd: fd}
	ti.srv = serve(l.t, fd, "instance-"+shortID(i), ":"+strconv.Itoa(instancePort))
	serve(l.t, fd, "other-port", ":"+strconv.Itoa(otherPort))
	return ti
}

func hostPort(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}

// TestIsolation sets up two instances on a lab node and checks the policy
// packet by packet: what must connect connects, and what must not is
// refused; then it removes the policy and checks that the refused paths do
// work without it, so that each refusal is the policy's doing.
func TestIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	m := l.manager()
	t.Cleanup(func() {
		if err := m.Reset(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	a := l.instance(ctx, m)
	b := l.instance(ctx, m)
	nodeSrv := serve(t, l.node.fd, "node-service", ":"+strconv.Itoa(nodePort))
	lanSrv := serve(t, l.lan.fd, "lan", ":"+strconv.Itoa(inetPort))
	inetSrv := serve(t, l.inet.fd, "internet", ":"+strconv.Itoa(inetPort))
	t.Logf("A: %+v", a.Attachment)
	t.Logf("B: %+v", b.Attachment)

	reach := func(t *testing.T, from int, local netip.Addr, target string) string {
		t.Helper()
		line, err := dial(from, local, target, dialTimeout)
		if err != nil {
			t.Errorf("connect to %s: %v, want a connection", target, err)
		}
		return line
	}
	// refused checks that the connection fails and that srv, the listener
	// behind target, saw nothing.
	refused := func(t *testing.T, from int, local netip.Addr, target string, srv *server) {
		t.Helper()
		before := srv.count()
		line, err := dial(from, local, target, dialTimeout)
		if err == nil {
			t.Errorf("connect to %s: got through (%q), want it refused", target, line)
		}
		if n := srv.count(); n != before {
			t.Errorf("%s accepted %d connections while %s was being refused", srv.name, n-before, target)
		}
	}

	// The isolation cases, reused for the control run below.
	blocked := []struct {
		name   string
		from   testInstance
		target string
		srv    *server
	}{
		{"A to B", a, hostPort(b.Addr, instancePort), b.srv},
		{"B to A", b, hostPort(a.Addr, instancePort), a.srv},
		{"A to B over IPv4", a, hostPort(b.Addr4, instancePort), b.srv},
		{"A to node uplink address", a, hostPort(l.node6, nodePort), nodeSrv},
		{"A to node uplink IPv4", a, hostPort(l.node4, nodePort), nodeSrv},
		{"A to node gateway", a, net.JoinHostPort(GatewayIPv6.String()+"%eth0", strconv.Itoa(nodePort)), nodeSrv},
		{"A to node IPv4 gateway", a, hostPort(GatewayIPv4, nodePort), nodeSrv},
		{"A to node LAN address", a, hostPort(l.nodeLAN4, nodePort), nodeSrv},
		{"A to private network IPv4", a, hostPort(l.lanIP4, inetPort), lanSrv},
		{"A to private network ULA", a, hostPort(l.lanIP6, inetPort), lanSrv},
		{"A to private address via uplink", a, hostPort(l.private4, inetPort), inetSrv},
		{"A to another node's /64 via uplink", a, hostPort(l.otherNode, inetPort), inetSrv},
	}

	t.Run("node reaches instances", func(t *testing.T) {
		for _, in := range []testInstance{a, b} {
			if line := reach(t, l.node.fd, netip.Addr{}, hostPort(in.Addr, instancePort)); !strings.HasPrefix(line, in.srv.name+" ") {
				t.Errorf("greeting %q, want one from %s", line, in.srv.name)
			}
		}
	})
	t.Run("node reaches only the instance's port", func(t *testing.T) {
		if _, err := dial(l.node.fd, netip.Addr{}, hostPort(a.Addr, otherPort), dialTimeout); err == nil {
			t.Error("node connected to a port that is not the instance's")
		}
	})
	t.Run("denied", func(t *testing.T) {
		for _, c := range blocked {
			t.Run(c.name, func(t *testing.T) {
				refused(t, c.from.fd, netip.Addr{}, c.target, c.srv)
			})
		}
	})
	t.Run("egress NAT", func(t *testing.T) {
		// The internet sees the node's uplink address, never the instance's.
		if line := reach(t, a.fd, netip.Addr{}, hostPort(l.inet6, inetPort)); line != "internet "+l.node6.String() {
			t.Errorf("over IPv6 the internet saw %q, want the node's %v", line, l.node6)
		}
		if line := reach(t, a.fd, netip.Addr{}, hostPort(l.inet4, inetPort)); line != "internet "+l.node4.String() {
			t.Errorf("over IPv4 the internet saw %q, want the node's %v", line, l.node4)
		}
		if inetSrv.saw(a.Addr) || inetSrv.saw(a.Addr4) {
			t.Error("the internet saw an instance's own address")
		}
	})
	t.Run("no spoofing", func(t *testing.T) {
		// An instance that adds an address of its own choosing (B's) cannot
		// send from it.
		h, err := handleAt(a.fd)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		spoof := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(b.Addr, 128)), Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(eth0, spoof); err != nil {
			t.Fatal(err)
		}
		defer h.AddrDel(eth0, spoof)
		refused(t, a.fd, b.Addr, hostPort(l.inet6, inetPort), inetSrv)
	})

	t.Run("without the policy the same paths work", func(t *testing.T) {
		// Removing the table (as `nft flush ruleset` would) must open what
		// the policy closed, or the refusals above proved nothing.
		l.nft("delete table inet " + l.cfg.Table + "\n")
		for _, c := range blocked {
			if _, err := dial(c.from.fd, netip.Addr{}, c.target, dialTimeout); err != nil {
				t.Errorf("%s: without the policy: %v", c.name, err)
			}
		}
		// Apply repairs it, elements included.
		if err := m.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		refused(t, a.fd, netip.Addr{}, hostPort(b.Addr, instancePort), b.srv)
		reach(t, l.node.fd, netip.Addr{}, hostPort(a.Addr, instancePort))
		if t.Failed() {
			t.Log(l.nftList())
		}
	})
}

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
