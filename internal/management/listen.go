package management

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// DefaultPort is the management API's port when OPERATOR_ADDR is unset.
const DefaultPort = "8081"

// The private networks the API may default to, most preferred first:
// Tailscale's (the cluster's private network in production), then RFC 1918
// and unique local addresses.
var (
	tailscale = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c:a1e0::/48")}
	private   = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fc00::/7"),
	}
	// Interfaces that carry a private range but are not the machine's
	// network: container bridges and veths, instances' links.
	virtual = []string{"docker", "br-", "veth", "virbr", "cni", "flannel", "zw", "lo"}
)

// ListenAddr is where the management API listens: addr when set, else the
// machine's private address on DefaultPort. It never defaults to every
// interface: the API hands out registry tokens and places instances, and
// belongs on the private network only.
func ListenAddr(addr string) (string, error) {
	if addr != "" {
		return addr, nil
	}
	ifaces, err := machineAddrs()
	if err != nil {
		return "", fmt.Errorf("OPERATOR_ADDR is unset and the machine's addresses cannot be read: %w", err)
	}
	a, ok := privateAddr(ifaces)
	if !ok {
		return "", errors.New("OPERATOR_ADDR is unset and the machine has no private address (Tailscale, RFC 1918 or ULA) to listen on: set it")
	}
	return net.JoinHostPort(a.String(), DefaultPort), nil
}

// ifaceAddr is one address of an interface that is up.
type ifaceAddr struct {
	iface string
	addr  netip.Addr
}

func machineAddrs() ([]ifaceAddr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []ifaceAddr
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := i.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, ifaceAddr{i.Name, p.Addr()})
			}
		}
	}
	return out, nil
}

// privateAddr picks the address to listen on: the first Tailscale one,
// else the first private one on an interface that is not virtual.
func privateAddr(addrs []ifaceAddr) (netip.Addr, bool) {
	in := func(a netip.Addr, ps []netip.Prefix) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	for _, ranges := range [][]netip.Prefix{tailscale, private} {
		for _, ia := range addrs {
			isVirtual := slices.ContainsFunc(virtual, func(v string) bool { return strings.HasPrefix(ia.iface, v) })
			if !isVirtual && ia.addr.Zone() == "" && in(ia.addr.Unmap(), ranges) {
				return ia.addr.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
