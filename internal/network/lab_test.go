package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"golang.org/x/sys/unix"
)

// A lab is a node made of network namespaces, so that tests use real
// namespaces, veths and nftables without touching the machine they run on:
//
//	inet ("the internet": 2001:db8:…::2, 203.0.113.2, and, routed to it,
//	  |    a private 192.168.77.2 and an address of another node's /64)
//	uplink0
//	node (the node: forwarding, the nftables table, a listener standing in
//	  |    for node services, the test dialing as the node-proxy)
//	lan0
//	lan  (a private network: 10.77.0.2, fd11:22:…::2)
//
// Instances' namespaces are real named ones in /run/netns, with a prefix
// unique to the test, joined to node by the Manager under test.
type lab struct {
	t        *testing.T
	tag      string
	cfg      Config
	node     nsRef
	inet     nsRef
	lan      nsRef
	node6    netip.Addr // the node's uplink addresses
	node4    netip.Addr
	inet6    netip.Addr
	inet4    netip.Addr
	lanIP6   netip.Addr
	lanIP4   netip.Addr
	nodeLAN4 netip.Addr
	// Reachable through the uplink, but blocked by destination.
	private4  netip.Addr
	otherNode netip.Addr
	// Also reachable through the uplink, blocked by default: cloud
	// metadata services (AWS and others over IPv4 and IPv6, Azure's wire
	// server) and the internet's own address through NAT64.
	metadata4, metadata6, azure4, nat64 netip.Addr
	// Reachable through the uplink and blocked only by configuration
	// (Config.Blocked): as another node's public addresses would be.
	nodePublic4, nodePublic6 netip.Addr
}

type nsRef struct {
	path string
	fd   int
	h    *netlink.Handle
}

// requireNetns skips (or, under CI=true, fails) unless this process can make
// network namespaces and run nft.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "netns", errors.New("needs root"))
	}
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.Unavailable(t, "netns", err)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: unshare changes only this thread, which the
		// runtime then discards.
		runtime.LockOSThread()
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		testenv.Unavailable(t, "netns", fmt.Errorf("unshare(CLONE_NEWNET): %w", err))
	}
}

func newLab(t *testing.T) *lab {
	requireNetns(t)
	b := make([]byte, 3)
	rand.Read(b)
	tag := "zwt" + hex.EncodeToString(b)
	r := fmt.Sprintf("%x", uint16(b[0])<<8|uint16(b[1]))
	l := &lab{
		t:         t,
		tag:       tag,
		node6:     netip.MustParseAddr("2001:db8:" + r + "::1"),
		inet6:     netip.MustParseAddr("2001:db8:" + r + "::2"),
		node4:     netip.MustParseAddr("203.0.113.1"),
		inet4:     netip.MustParseAddr("203.0.113.2"),
		lanIP6:    netip.MustParseAddr("fd11:22:" + r + "::2"),
		lanIP4:    netip.MustParseAddr("10.77.0.2"),
		nodeLAN4:  netip.MustParseAddr("10.77.0.1"),
		private4:  netip.MustParseAddr("192.168.77.2"),
		otherNode: ipam.NodePrefix(ipam.DefaultCluster, 2).Addr().Next().Next().Next(),

		metadata4:   netip.MustParseAddr("169.254.169.254"),
		metadata6:   netip.MustParseAddr("fd00:ec2::254"),
		azure4:      netip.MustParseAddr("168.63.129.16"),
		nat64:       netip.MustParseAddr("64:ff9b::203.0.113.2"),
		nodePublic4: netip.MustParseAddr("198.51.100.7"),
		nodePublic6: netip.MustParseAddr("2001:db8:" + r + "::7"),
	}
	l.node = l.makeNetns("node")
	l.inet = l.makeNetns("inet")
	l.lan = l.makeNetns("lan")

	// node <-> inet
	l.veth(l.node, "uplink0", l.inet, "eth0")
	l.addr(l.node, "uplink0", "2001:db8:"+r+"::1/64", "203.0.113.1/24")
	l.addr(l.inet, "eth0", "2001:db8:"+r+"::2/64", "203.0.113.2/24", "192.168.77.2/32", l.otherNode.String()+"/128")
	for _, a := range []netip.Addr{l.metadata4, l.metadata6, l.azure4, l.nat64, l.nodePublic4, l.nodePublic6} {
		l.addr(l.inet, "eth0", netip.PrefixFrom(a, a.BitLen()).String())
	}
	l.route(l.node, "uplink0", "::/0", l.inet6.String())
	l.route(l.node, "uplink0", "0.0.0.0/0", l.inet4.String())
	// So that, with the policy removed, un-translated packets from instances
	// would be answered: the control run proves the plumbing works.
	l.route(l.inet, "eth0", ipam.DefaultCluster.String(), l.node6.String())
	l.route(l.inet, "eth0", ipam.DefaultIPv4.String(), l.node4.String())

	// node <-> lan
	l.veth(l.node, "lan0", l.lan, "eth0")
	l.addr(l.node, "lan0", "fd11:22:"+r+"::1/64", "10.77.0.1/24")
	l.addr(l.lan, "eth0", "fd11:22:"+r+"::2/64", "10.77.0.2/24")
	l.route(l.lan, "eth0", "::/0", "fd11:22:"+r+"::1")
	l.route(l.lan, "eth0", "0.0.0.0/0", "10.77.0.1")

	l.cfg = DefaultConfig()
	l.cfg.Uplink = "uplink0"
	l.cfg.Table = tag
	l.cfg.NetnsPrefix = tag + "-i-"
	l.cfg.NodeNetns = l.node.path
	l.cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

func (l *lab) manager() *Manager {
	l.t.Helper()
	m, err := New(l.cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { m.Close() })
	return m
}

func (l *lab) makeNetns(role string) nsRef {
	t := l.t
	t.Helper()
	path := filepath.Join("/run/netns", l.tag+"-"+role)
	if err := createNetns(path, func() error {
		// DAD would delay the lab's own addresses.
		_, err := sysctl("net/ipv6/conf/default/accept_dad", "0")
		return err
	}); err != nil {
		testenv.Unavailable(t, "netns", err)
	}
	fd, err := openNetns(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := handleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		unix.Close(fd)
		if err := removeNetns(path); err != nil {
			t.Error(err)
		}
	})
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return nsRef{path: path, fd: fd, h: h}
}

func (l *lab) veth(a nsRef, aName string, b nsRef, bName string) {
	l.t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(b.fd)}
	if err := a.h.LinkAdd(v); err != nil {
		l.t.Fatal(err)
	}
	for _, end := range []struct {
		ns   nsRef
		name string
	}{{a, aName}, {b, bName}} {
		link, err := end.ns.h.LinkByName(end.name)
		if err == nil {
			err = end.ns.h.LinkSetUp(link)
		}
		if err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *lab) addr(ns nsRef, dev string, prefixes ...string) {
	l.t.Helper()
	link, err := ns.h.LinkByName(dev)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, s := range prefixes {
		if err := ns.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(s)), Flags: unix.IFA_F_NODAD}); err != nil {
			l.t.Fatalf("add %s to %s: %v", s, dev, err)
		}
	}
}

func (l *lab) route(ns nsRef, dev, dst, gw string) {
	l.t.Helper()
	link, err := ns.h.LinkByName(dev)
	if err != nil {
		l.t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.MustParsePrefix(dst)), Gw: netip.MustParseAddr(gw).AsSlice()}
	if err := ns.h.RouteAdd(r); err != nil {
		l.t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

// nftList returns the lab's table as nft shows it, without counters, or
// "" if it is missing.
func (l *lab) nftList() string {
	l.t.Helper()
	var out []byte
	err := inNetns(l.node.fd, func() (err error) {
		out, err = exec.Command("nft", "-s", "list", "table", "inet", l.cfg.Table).CombinedOutput()
		return err
	})
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return ""
		}
		l.t.Fatalf("nft list: %v: %s", err, out)
	}
	return string(out)
}

func (l *lab) nft(script string) {
	l.t.Helper()
	l.nftIn(l.node.fd, script)
}

// nftIn runs script with nft in the namespace open at fd.
func (l *lab) nftIn(fd int, script string) {
	l.t.Helper()
	err := inNetns(fd, func() error {
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// server is a TCP listener in some namespace that greets every connection
// with its name and the address it sees the peer at, and remembers peers.
type server struct {
	name string
	mu   sync.Mutex
	seen []netip.Addr
}

func serve(t *testing.T, fd int, name, addr string) *server {
	t.Helper()
	var ln net.Listener
	if err := inNetns(fd, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("%s: listen %s: %v", name, addr, err)
	}
	s := &server{name: name}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			s.mu.Lock()
			s.seen = append(s.seen, peer)
			s.mu.Unlock()
			fmt.Fprintf(c, "%s %s\n", name, peer)
			c.Close()
		}
	}()
	return s
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *server) saw(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.seen {
		if p == a {
			return true
		}
	}
	return false
}

// dial connects from the namespace open at fd (from the local address, if
// valid) and returns the server's greeting.
func dial(fd int, local netip.Addr, target string, timeout time.Duration) (string, error) {
	var line string
	err := inNetns(fd, func() error {
		d := net.Dialer{Timeout: timeout}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}
