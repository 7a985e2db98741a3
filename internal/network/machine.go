package network

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/template"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A simulated node (`zeitwork dev`: a network namespace per node on one
// machine) has no interface to the internet of its own. With a
// MachineUplink it gets one: a veth to the machine, which routes what comes
// from it out of its own default route, masqueraded, and lets none of it
// reach the machine itself (where the control plane listens: Postgres, the
// registry, MinIO, the APIs) or another simulated node. Instances' traffic
// has already been judged and translated by the node's own table; the
// machine's table is the second wall, for whatever the node forwards.

//go:embed machine.nft.tmpl
var machineRulesText string

var machineRulesTemplate = template.Must(template.New("machine").Parse(machineRulesText))

func renderMachineRules(u MachineUplink) string {
	var b strings.Builder
	if err := machineRulesTemplate.Execute(&b, u); err != nil {
		panic("network: machine rules template: " + err.Error()) // a bug, caught by tests
	}
	return b.String()
}

// inMachine runs fn in the machine's namespace.
func (m *Manager) inMachine(fn func() error) error {
	if m.machineFd < 0 {
		return fn()
	}
	return inNetns(m.machineFd, fn)
}

// machineAddrs are the machine's and the node's ends of the uplink.
func machineAddrs(u MachineUplink) (machine, node netip.Prefix) {
	a := u.Net.Addr().Next()
	return netip.PrefixFrom(a, 30), netip.PrefixFrom(a.Next(), 30)
}

// applyMachine makes the node's uplink to the machine and the machine's
// table for it. Idempotent, like Apply.
func (m *Manager) applyMachine(ctx context.Context) error {
	u := *m.cfg.Machine
	if err := m.inMachine(func() error {
		_, err := sysctl("net/ipv4/ip_forward", "1")
		return err
	}); err != nil {
		return fmt.Errorf("machine forwarding: %w", err)
	}
	outer, inner, err := m.ensureMachineVeth(ctx, u)
	if err != nil {
		return err
	}
	net, err := m.uplinkNet(u.Net, outer)
	if err != nil {
		return err
	}
	if net != u.Net {
		m.log.InfoContext(ctx, "the node's uplink network is taken on the machine: using the next free one", "taken", u.Net.String(), "net", net.String())
		u.Net = net
		c := *m.cfg.Machine
		c.Net = net
		m.cfg.Machine = &c
	}
	mAddr, nAddr := machineAddrs(u)
	for _, step := range []func() error{
		func() error { return ensureAddrs(m.machine, outer, []netip.Prefix{mAddr}, true) },
		func() error { return ensureUp(m.machine, outer) },
		func() error { return ensureAddrs(m.node, inner, []netip.Prefix{nAddr}, true) },
		func() error { return ensureUp(m.node, inner) },
		func() error { return ensureDefaultRoute(m.node, inner, mAddr.Addr()) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("machine uplink %s: %w", u.Link, err)
		}
	}
	if err := m.runNftIn(ctx, m.inMachine, renderMachineRules(u)); err != nil {
		return fmt.Errorf("machine uplink rules: %w", err)
	}
	return nil
}

// ensureMachineVeth makes u.Link (on the machine) and Uplink (in the node)
// the two ends of one veth, recreating it when one end is missing or leads
// elsewhere (the node's namespace was recreated).
func (m *Manager) ensureMachineVeth(ctx context.Context, u MachineUplink) (outer, inner netlink.Link, err error) {
	if outer, err = linkByName(m.machine, u.Link); err != nil {
		return nil, nil, err
	}
	if inner, err = linkByName(m.node, m.cfg.Uplink); err != nil {
		return nil, nil, err
	}
	if outer != nil && inner != nil && paired(outer, inner) {
		return outer, inner, nil
	}
	for _, end := range []struct {
		h *netlink.Handle
		l netlink.Link
	}{{m.machine, outer}, {m.node, inner}} {
		if end.l != nil {
			if err := end.h.LinkDel(end.l); err != nil && !errors.Is(err, unix.ENODEV) {
				return nil, nil, fmt.Errorf("delete stale uplink end %s: %w", end.l.Attrs().Name, err)
			}
		}
	}
	m.log.InfoContext(ctx, "creating the node's uplink to the machine", "machine_link", u.Link, "uplink", m.cfg.Uplink, "net", u.Net.String())
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: u.Link},
		PeerName:      m.cfg.Uplink,
		PeerNamespace: netlink.NsFd(m.nodeFd),
	}
	if err := m.machine.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create uplink veth %s: %w", u.Link, err)
	}
	if outer, err = m.machine.LinkByName(u.Link); err != nil {
		return nil, nil, err
	}
	if inner, err = m.node.LinkByName(m.cfg.Uplink); err != nil {
		return nil, nil, err
	}
	return outer, inner, nil
}

// uplinkProbes is how many /30s uplinkNet tries from the one asked for.
const uplinkProbes = 256

// uplinkNet is the /30 of the node's uplink: the one the machine's end
// already has (the node agent restarted), else want if no other link on
// the machine routes it, else the next free one after it. want comes from
// the node's id (MachineUplinkNet), and two simulated nodes on a machine
// (a test's and `zeitwork dev`'s, or one a killed run left behind) can
// hash to the same /30: refusing would fail the second node for nothing.
func (m *Manager) uplinkNet(want netip.Prefix, outer netlink.Link) (netip.Prefix, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) { return m.machine.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return netip.Prefix{}, err
	}
	ours := outer.Attrs().Index
	taken := func(n netip.Prefix) bool {
		for _, r := range routes {
			// Only as specific or more: a wider route (the default, a
			// host's 169.254.0.0/16) is what ours is meant to override.
			if p := toPrefix(r.Dst); r.Dst != nil && p.Bits() >= n.Bits() && n.Contains(p.Addr()) && r.LinkIndex != ours {
				return true
			}
		}
		return false
	}
	have, err := retryDump(func() ([]netlink.Addr, error) { return m.machine.AddrList(outer, netlink.FAMILY_V4) })
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range have {
		if p := toPrefix(a.IPNet).Masked(); p.Bits() == 30 && machineUplinkRange.Contains(p.Addr()) && !taken(p) {
			return p, nil
		}
	}
	n := want
	for range uplinkProbes {
		if !taken(n) {
			return n, nil
		}
		n = nextUplinkNet(n)
	}
	return netip.Prefix{}, fmt.Errorf("machine uplink networks %v and the %d after it are all routed on the machine", want, uplinkProbes-1)
}

// nextUplinkNet is the /30 after n in machineUplinkRange, wrapping around.
func nextUplinkNet(n netip.Prefix) netip.Prefix {
	a := n.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + 4
	binary.BigEndian.PutUint32(a[:], v)
	next := netip.AddrFrom4(a)
	if !machineUplinkRange.Contains(next) {
		next = machineUplinkRange.Addr()
	}
	return netip.PrefixFrom(next, 30)
}

// resetMachine removes the uplink and the machine's table.
func (m *Manager) resetMachine(ctx context.Context) error {
	u := m.cfg.Machine
	var errs []error
	if err := m.runNftIn(ctx, m.inMachine, "table inet "+u.Table+" {}\ndelete table inet "+u.Table+"\n"); err != nil {
		errs = append(errs, err)
	}
	l, err := linkByName(m.machine, u.Link)
	if err == nil && l != nil {
		err = m.machine.LinkDel(l) // takes the node's end with it
	}
	if err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("delete %s: %w", u.Link, err))
	}
	return errors.Join(errs...)
}
