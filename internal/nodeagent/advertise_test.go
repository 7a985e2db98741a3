package nodeagent

import (
	"net"
	"testing"
)

func TestAdvertisedAPI(t *testing.T) {
	for _, c := range []struct {
		internal string
		listen   net.Addr
		want     string
	}{
		// Listening everywhere: the cluster reaches it at the internal host.
		{"100.64.0.1:8083", &net.TCPAddr{IP: net.IPv6unspecified, Port: 8082}, "100.64.0.1:8082"},
		{"[fd7a::1]:8083", &net.TCPAddr{IP: net.IPv4zero, Port: 8082}, "[fd7a::1]:8082"},
		// Listening on one address (dev's loopback, a private interface): that one.
		{"127.0.0.1:28200", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 28101}, "127.0.0.1:28101"},
		{"100.64.0.1:8083", &net.TCPAddr{IP: net.ParseIP("fd7a::2"), Port: 9000}, "[fd7a::2]:9000"},
	} {
		if got := advertisedAPI(c.internal, c.listen); got != c.want {
			t.Errorf("advertisedAPI(%q, %s) = %q, want %q", c.internal, c.listen, got, c.want)
		}
	}
}
