package management

import (
	"net/netip"
	"testing"
)

// TestListenAddrIsPrivate: without OPERATOR_ADDR the management API
// listens on the machine's private address, Tailscale's first, never on a
// public one, a container bridge's, or every interface; with none it
// refuses to guess.
func TestListenAddrIsPrivate(t *testing.T) {
	a := func(iface, addr string) ifaceAddr { return ifaceAddr{iface, netip.MustParseAddr(addr)} }
	for _, c := range []struct {
		name  string
		addrs []ifaceAddr
		want  string // "" for none
	}{
		{"tailscale preferred", []ifaceAddr{a("lo", "127.0.0.1"), a("eth0", "203.0.113.5"), a("eth1", "10.0.0.5"), a("tailscale0", "100.101.102.103")}, "100.101.102.103"},
		{"tailscale IPv6", []ifaceAddr{a("eth0", "2001:db8::5"), a("tailscale0", "fd7a:115c:a1e0::1")}, "fd7a:115c:a1e0::1"},
		{"private network", []ifaceAddr{a("eth0", "203.0.113.5"), a("docker0", "172.17.0.1"), a("eth1", "192.168.1.20")}, "192.168.1.20"},
		{"public only", []ifaceAddr{a("lo", "127.0.0.1"), a("eth0", "203.0.113.5"), a("eth0", "2001:db8::5"), a("docker0", "172.17.0.1")}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := privateAddr(c.addrs)
			switch {
			case c.want == "" && ok:
				t.Errorf("picked %v, want none", got)
			case c.want != "" && (!ok || got.String() != c.want):
				t.Errorf("picked %v (%v), want %s", got, ok, c.want)
			}
		})
	}
	if got, err := ListenAddr("127.0.0.1:9000"); err != nil || got != "127.0.0.1:9000" {
		t.Errorf("an explicit OPERATOR_ADDR: %q, %v", got, err)
	}
	// This machine: whatever it picks is private, on the default port.
	if got, err := ListenAddr(""); err == nil {
		ap := netip.MustParseAddrPort(got)
		if ap.Addr().IsUnspecified() || !ap.Addr().IsPrivate() && !netip.MustParsePrefix("100.64.0.0/10").Contains(ap.Addr()) {
			t.Errorf("default listen address %s is not private", got)
		}
	}
}
