package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// linkIndex is the index of the interface name in the network namespace
// fd. A link-local target names its interface by index, not "%eth0": Go
// caches interface names process-wide (for up to a minute), so a name
// resolved in an earlier test's namespace would give that one's index.
func linkIndex(t *testing.T, fd int, name string) int {
	t.Helper()
	h, err := handleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Index
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
	// Other nodes' public addresses, as an operator configures them.
	l.cfg.Blocked = []netip.Prefix{netip.PrefixFrom(l.nodePublic4, 32), netip.PrefixFrom(l.nodePublic6, 128)}
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
	// behind target, saw nothing; refusedHow with reset also that it
	// failed with a TCP reset.
	var refusedHow func(t *testing.T, from int, local netip.Addr, target string, srv *server, reset bool)
	refused := func(t *testing.T, from int, local netip.Addr, target string, srv *server) {
		t.Helper()
		refusedHow(t, from, local, target, srv, true)
	}
	refusedHow = func(t *testing.T, from int, local netip.Addr, target string, srv *server, reset bool) {
		t.Helper()
		before := srv.count()
		line, err := dial(from, local, target, dialTimeout)
		if err == nil {
			t.Errorf("connect to %s: got through (%q), want it refused", target, line)
		} else if reset && !local.IsValid() && !errors.Is(err, syscall.ECONNREFUSED) {
			// A TCP reset: the application hears "refused" at once, not
			// a timeout after retransmitted SYNs. (A spoofed source is
			// dropped before conntrack: nothing answers it.)
			t.Errorf("connect to %s: %v, want connection refused (a TCP reset)", target, err)
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
		{"A to node gateway", a, net.JoinHostPort(GatewayIPv6.String()+"%"+strconv.Itoa(linkIndex(t, a.fd, "eth0")), strconv.Itoa(nodePort)), nodeSrv},
		{"A to node IPv4 gateway", a, hostPort(GatewayIPv4, nodePort), nodeSrv},
		{"A to node LAN address", a, hostPort(l.nodeLAN4, nodePort), nodeSrv},
		{"A to private network IPv4", a, hostPort(l.lanIP4, inetPort), lanSrv},
		{"A to private network ULA", a, hostPort(l.lanIP6, inetPort), lanSrv},
		{"A to private address via uplink", a, hostPort(l.private4, inetPort), inetSrv},
		{"A to another node's /64 via uplink", a, hostPort(l.otherNode, inetPort), inetSrv},
		{"A to cloud metadata IPv4", a, hostPort(l.metadata4, inetPort), inetSrv},
		{"A to cloud metadata IPv6 (AWS)", a, hostPort(l.metadata6, inetPort), inetSrv},
		{"A to Azure's wire server", a, hostPort(l.azure4, inetPort), inetSrv},
		{"A to the internet through NAT64", a, hostPort(l.nat64, inetPort), inetSrv},
		{"A to a configured node IPv4 address", a, hostPort(l.nodePublic4, inetPort), inetSrv},
		{"A to a configured node IPv6 address", a, hostPort(l.nodePublic6, inetPort), inetSrv},
	}

	// Refused without an answer: traffic from the instance's link-local
	// address, which anti-spoofing drops before conntrack, where no reset
	// can be sent. Every other refusal is a TCP reset.
	dropped := map[string]bool{"A to node gateway": true}

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
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("node to another port: %v, want connection refused", err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		for _, c := range blocked {
			t.Run(c.name, func(t *testing.T) {
				refusedHow(t, c.from.fd, netip.Addr{}, c.target, c.srv, !dropped[c.name])
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
