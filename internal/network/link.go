package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pairedWithNetns says whether host's peer is eth0 in the namespace at
// nsPath.
func (m *Manager) pairedWithNetns(host netlink.Link, nsPath string) bool {
	fd, err := openNetns(nsPath)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	h, err := handleAt(fd)
	if err != nil {
		return false
	}
	defer h.Close()
	eth0, err := linkByName(h, "eth0")
	return err == nil && eth0 != nil && paired(host, eth0)
}

// paired says whether host and eth0 are the two ends of one veth. Each
// end's IFLA_LINK is its peer's index (in the peer's namespace).
func paired(host, eth0 netlink.Link) bool {
	_, ok := host.(*netlink.Veth)
	return ok && host.Attrs().ParentIndex == eth0.Attrs().Index && eth0.Attrs().ParentIndex == host.Attrs().Index
}

func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	return l, err
}

func ensureUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureAddrs gives l the addresses want (without DAD, so they are usable
// at once). With prune, it also removes other global addresses, so that an
// instance whose address changed does not keep the old one.
func ensureAddrs(h *netlink.Handle, l netlink.Link, want []netip.Prefix, prune bool) error {
	have, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	got := map[netip.Prefix]bool{}
	for _, a := range have {
		p := toPrefix(a.IPNet)
		if containsPrefix(want, p) {
			got[p] = true
			continue
		}
		if prune && !p.Addr().IsLinkLocalUnicast() {
			if err := h.AddrDel(l, &a); err != nil {
				return fmt.Errorf("remove %v from %s: %w", p, l.Attrs().Name, err)
			}
		}
	}
	for _, p := range want {
		if got[p] {
			continue
		}
		a := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
		if p.Addr().Is4() {
			a.Flags = 0
		}
		if err := h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add %v to %s: %w", p, l.Attrs().Name, err)
		}
	}
	return nil
}

// ensureDefaultRoute routes everything of gw's family to gw on l. The
// gateway is link-local and the instance's addresses are host routes, so
// the IPv4 route must say "onlink"; IPv6 needs no such thing for fe80::/10.
func ensureDefaultRoute(h *netlink.Handle, l netlink.Link, gw netip.Addr) error {
	fam := netlink.FAMILY_V6
	dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	flags := 0
	if gw.Is4() {
		fam, dst, flags = netlink.FAMILY_V4, netip.PrefixFrom(netip.IPv4Unspecified(), 0), int(netlink.FLAG_ONLINK)
	}
	rs, err := h.RouteList(l, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	for _, r := range rs {
		if (r.Dst == nil || toPrefix(r.Dst).Bits() == 0) && r.Gw != nil {
			if g, _ := netip.AddrFromSlice(r.Gw); g.Unmap() == gw {
				return nil
			}
		}
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice(), Flags: flags}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %v: %w", gw, err)
	}
	return nil
}

// retryDump retries a netlink dump the kernel interrupted because the
// table changed meanwhile (netlink.ErrDumpInterrupted): the partial result
// must not be trusted.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 128
	if p.Addr().Is4() {
		bits = 32
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

func toPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
