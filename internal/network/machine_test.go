package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/zeitwork/zeitwork/internal/id"
)

// machineLab is `zeitwork dev`'s shape, in namespaces of the test's own:
//
//	inet    ("the internet": 203.0.113.2, and a resolver at the private
//	  |      10.255.77.53, as a machine's resolver often is)
//	wan0
//	machine (the control plane listens here: 203.0.113.1 and the uplink's
//	  |      end; forwarding and the machine's table)
//	<link>  (the MachineUplink veth, made by the Manager)
//	node    (a simulated node: the node's table, its instances' veths)
type machineLab struct {
	*lab
	machine  nsRef
	machine4 netip.Addr
	resolver netip.Addr
}

const (
	postgresPort = 5432
	httpsPort    = 443
	dnsPort      = 53
)

func newMachineLab(t *testing.T, egress bool) *machineLab {
	requireNetns(t)
	b := make([]byte, 3)
	rand.Read(b)
	tag := "zwt" + hex.EncodeToString(b)
	l := &machineLab{
		lab:      &lab{t: t, tag: tag, inet4: netip.MustParseAddr("203.0.113.2")},
		machine4: netip.MustParseAddr("203.0.113.1"),
		resolver: netip.MustParseAddr("10.255.77.53"),
	}
	l.machine = l.makeNetns("machine")
	l.node = l.makeNetns("node")
	l.inet = l.makeNetns("inet")
	l.veth(l.machine, "wan0", l.inet, "eth0")
	l.addr(l.machine, "wan0", "203.0.113.1/24")
	l.addr(l.inet, "eth0", "203.0.113.2/24", l.resolver.String()+"/32")
	l.route(l.machine, "wan0", "0.0.0.0/0", l.inet4.String())

	l.cfg = DefaultConfig()
	l.cfg.Table = tag
	l.cfg.NetnsPrefix = tag + "-i-"
	l.cfg.NodeNetns = l.node.path
	l.cfg.ResolvConfDir = t.TempDir()
	l.cfg.Resolvers = []netip.Addr{l.resolver}
	l.cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if egress {
		l.cfg.Uplink = "uplink0"
		l.cfg.Machine = &MachineUplink{
			Netns: l.machine.path, Link: "zwu" + tag[3:], LinkGlob: "zwu*",
			Net: MachineUplinkNet(id.New()), Table: tag,
		}
	}
	return l
}

// TestMachineUplink: a simulated node's instance reaches the internet
// through the machine, seen as the machine's address, and its resolver on
// port 53; it reaches nothing on the machine, where the control plane
// listens. Without egress it reaches neither. Removing the machine's table
// then opens the path to the machine, so the refusal is that table's doing.
func TestMachineUplink(t *testing.T) {
	t.Parallel()
	for _, egress := range []bool{true, false} {
		name := "nat"
		if !egress {
			name = "off"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l := newMachineLab(t, egress)
			m := l.manager()
			t.Cleanup(func() {
				if err := m.Reset(ctx); err != nil {
					t.Error(err)
				}
			})
			if err := m.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.Apply(ctx); err != nil { // idempotent: adopts its uplink
				t.Fatalf("second Apply: %v", err)
			}
			a := l.instance(ctx, m)
			inet := serve(t, l.inet.fd, "internet", hostPort(l.inet4, httpsPort))
			dns := serve(t, l.inet.fd, "resolver", hostPort(l.resolver, dnsPort))
			private := serve(t, l.inet.fd, "private", hostPort(l.resolver, inetPort))
			postgres := serve(t, l.machine.fd, "postgres", ":"+itoa(postgresPort))

			refused := func(target string, srv *server) {
				t.Helper()
				before := srv.count()
				if line, err := dial(a.fd, netip.Addr{}, target, dialTimeout); err == nil {
					t.Errorf("instance connected to %s (%q), want it refused", target, line)
				}
				if srv.count() != before {
					t.Errorf("%s accepted a connection from the instance", srv.name)
				}
			}
			controlPlane := []string{hostPort(l.machine4, postgresPort)}
			if egress {
				mAddr, _ := machineAddrs(*l.cfg.Machine)
				controlPlane = append(controlPlane, hostPort(mAddr.Addr(), postgresPort))
			}
			for _, target := range controlPlane {
				refused(target, postgres)
			}
			refused(hostPort(l.resolver, inetPort), private) // the resolver's address, not port 53

			if !egress {
				refused(hostPort(l.inet4, httpsPort), inet)
				refused(hostPort(l.resolver, dnsPort), dns)
				if a.ResolvConf != "" {
					t.Errorf("an instance without egress got a resolv.conf: %s", a.ResolvConf)
				}
				return
			}
			line, err := dial(a.fd, netip.Addr{}, hostPort(l.inet4, httpsPort), dialTimeout)
			if err != nil || line != "internet "+l.machine4.String() {
				t.Errorf("to the internet: %q, %v; want it to see the machine's %v", line, err, l.machine4)
			}
			if _, err := dial(a.fd, netip.Addr{}, hostPort(l.resolver, dnsPort), dialTimeout); err != nil {
				t.Errorf("to the resolver on port 53: %v", err)
			}
			b, err := os.ReadFile(a.ResolvConf)
			if err != nil || string(b) != "nameserver "+l.resolver.String()+"\n" {
				t.Errorf("resolv.conf %s: %q, %v", a.ResolvConf, b, err)
			}
			if filepath.Dir(filepath.Dir(a.ResolvConf)) != l.cfg.ResolvConfDir {
				t.Errorf("resolv.conf at %s, outside %s", a.ResolvConf, l.cfg.ResolvConfDir)
			}

			// Control run: without the machine's table the machine answers.
			l.nftIn(l.machine.fd, "delete table inet "+l.cfg.Machine.Table+"\n")
			if _, err := dial(a.fd, netip.Addr{}, hostPort(l.machine4, postgresPort), dialTimeout); err != nil {
				t.Errorf("without the machine's table: %v; the refusal above proved nothing", err)
			}
			if err := m.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			refused(hostPort(l.machine4, postgresPort), postgres)
			if err := m.Teardown(ctx, a.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(a.ResolvConf); !os.IsNotExist(err) {
				t.Errorf("resolv.conf left after teardown: %v", err)
			}
		})
	}
}

func TestMachineUplinkNet(t *testing.T) {
	seen := map[netip.Prefix]bool{}
	for range 50 {
		n := MachineUplinkNet(id.New())
		if n.Bits() != 30 || !machineUplinkRange.Contains(n.Addr()) || n != n.Masked() {
			t.Fatalf("MachineUplinkNet = %v, want a /30 in %v", n, machineUplinkRange)
		}
		seen[n] = true
	}
	if len(seen) < 45 {
		t.Errorf("50 ids gave only %d networks", len(seen))
	}
	if rules := renderMachineRules(MachineUplink{Link: "zwu1", LinkGlob: "zwu*", Net: netip.MustParsePrefix("169.254.192.4/30"), Table: "zw1"}); !strings.Contains(rules, `iifname "zwu1" jump node_to_machine`) {
		t.Errorf("machine rules do not guard the machine:\n%s", rules)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestMachineUplinkSkipsATakenNetwork: when the machine already routes the
// node's /30 elsewhere (another simulated node whose id hashed to it: one
// of `zeitwork dev`'s, or one a killed run left), the uplink takes the next
// free /30, keeps it on the next Apply, and its instances reach the
// internet through it.
func TestMachineUplinkSkipsATakenNetwork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newMachineLab(t, true)
	want := l.cfg.Machine.Net
	// wan0 routes want and the /30 after it: the third is the free one.
	second := nextUplinkNet(want)
	l.addr(l.machine, "wan0", netip.PrefixFrom(want.Addr().Next(), 30).String(), netip.PrefixFrom(second.Addr().Next(), 30).String())
	m := l.manager()
	t.Cleanup(func() {
		if err := m.Reset(ctx); err != nil {
			t.Error(err)
		}
	})
	third := nextUplinkNet(second)
	for i := range 2 {
		if err := m.Apply(ctx); err != nil {
			t.Fatalf("Apply %d: %v", i+1, err)
		}
		link, err := l.machine.h.LinkByName(l.cfg.Machine.Link)
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := l.machine.h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, toPrefix(a.IPNet).String())
		}
		if wantAddr := netip.PrefixFrom(third.Addr().Next(), 30).String(); len(got) != 1 || got[0] != wantAddr {
			t.Fatalf("Apply %d: the uplink's machine end has %v, want %s (%v and %v are taken)", i+1, got, wantAddr, want, second)
		}
	}
	a := l.instance(ctx, m)
	serve(t, l.inet.fd, "internet", hostPort(l.inet4, httpsPort))
	if line, err := dial(a.fd, netip.Addr{}, hostPort(l.inet4, httpsPort), dialTimeout); err != nil || line != "internet "+l.machine4.String() {
		t.Errorf("to the internet: %q, %v; want it to see the machine's %v", line, err, l.machine4)
	}
}

func TestNextUplinkNetWrapsInsideTheRange(t *testing.T) {
	last := netip.MustParsePrefix("169.254.255.252/30")
	if got := nextUplinkNet(last); got != netip.MustParsePrefix("169.254.192.0/30") {
		t.Fatalf("after %v: %v", last, got)
	}
	if got := nextUplinkNet(netip.MustParsePrefix("169.254.192.4/30")); got != netip.MustParsePrefix("169.254.192.8/30") {
		t.Fatalf("after 169.254.192.4/30: %v", got)
	}
}
