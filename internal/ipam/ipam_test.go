package ipam

import (
	"net/netip"
	"testing"

	"github.com/google/uuid"
	"github.com/zeitwork/zeitwork/internal/id"
)

func TestNodePrefix(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		index   uint16
		want    string
	}{
		{"fd7a:7765:7400::/48", 0, "fd7a:7765:7400::/64"},
		{"fd7a:7765:7400::/48", 1, "fd7a:7765:7400:1::/64"},
		{"fd7a:7765:7400::/48", 0xbeef, "fd7a:7765:7400:beef::/64"},
		{"fd7a:7765:7400::/48", 0xffff, "fd7a:7765:7400:ffff::/64"},
		{"fd12:3456:7800::/40", 2, "fd12:3456:7800:2::/64"},
	} {
		got := NodePrefix(netip.MustParsePrefix(tc.cluster), tc.index)
		if got.String() != tc.want {
			t.Errorf("NodePrefix(%s, %d) = %v, want %s", tc.cluster, tc.index, got, tc.want)
		}
	}
	for _, bad := range []string{"fd7a:7765:7400:1::/56", "10.0.0.0/8", "fd7a:7765:7400:1::/48"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NodePrefix(%s) did not panic", bad)
				}
			}()
			NodePrefix(netip.MustParsePrefix(bad), 1)
		}()
	}
}

func TestValidateCluster(t *testing.T) {
	if err := ValidateCluster(DefaultCluster); err != nil {
		t.Errorf("default cluster: %v", err)
	}
	for _, bad := range []string{"fd7a:7765:7400::/56", "100.64.0.0/10", "fd7a:7765:7400:1::/48", "::ffff:10.0.0.0/104"} {
		if err := ValidateCluster(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("ValidateCluster(%s) = nil, want an error", bad)
		}
	}
	if err := ValidateCluster(netip.Prefix{}); err == nil {
		t.Error("ValidateCluster(zero) = nil")
	}
	// The host this runs on uses fd00::/64; the default must not clash.
	if DefaultCluster.Overlaps(netip.MustParsePrefix("fd00::/64")) {
		t.Error("default cluster overlaps fd00::/64")
	}
}

func TestInstanceAddr(t *testing.T) {
	node := NodePrefix(DefaultCluster, 7)
	seen := map[netip.Addr]uuid.UUID{}
	for range 5000 {
		i := id.New()
		a := InstanceAddr(node, i)
		if a != InstanceAddr(node, i) {
			t.Fatal("InstanceAddr is not deterministic")
		}
		if !node.Contains(a) {
			t.Fatalf("InstanceAddr(%v, %v) = %v, outside the prefix", node, i, a)
		}
		if reserved(node, a) {
			t.Fatalf("InstanceAddr(%v, %v) = %v, a reserved address", node, i, a)
		}
		if other, dup := seen[a]; dup {
			t.Fatalf("ids %v and %v both map to %v", other, i, a)
		}
		seen[a] = i
	}
	// v7 ids made together share their leading timestamp bits; the
	// addresses must not.
	a, b := InstanceAddr(node, id.New()), InstanceAddr(node, id.New())
	if a.As16()[8] == b.As16()[8] && a.As16()[9] == b.As16()[9] && a.As16()[10] == b.As16()[10] {
		t.Errorf("consecutive ids give similar addresses %v and %v", a, b)
	}

	v4 := DefaultIPv4
	for range 5000 {
		a := InstanceAddr(v4, id.New())
		if !a.Is4() || !v4.Contains(a) || reserved(v4, a) {
			t.Fatalf("InstanceAddr(%v) = %v", v4, a)
		}
	}
}

func TestReservedAndNext(t *testing.T) {
	node := netip.MustParsePrefix("fd7a:7765:7400:1::/64")
	for _, s := range []string{"fd7a:7765:7400:1::", "fd7a:7765:7400:1::1", "fd7a:7765:7400:1:ffff:ffff:ffff:ffff", "fd7a:7765:7400:1:ffff:ffff:ffff:ff80"} {
		if !reserved(node, netip.MustParseAddr(s)) {
			t.Errorf("%s is not reserved", s)
		}
	}
	for _, s := range []string{"fd7a:7765:7400:1::2", "fd7a:7765:7400:1:ffff:ffff:ffff:ff7f", "fd7a:7765:7400:1:1234::"} {
		if reserved(node, netip.MustParseAddr(s)) {
			t.Errorf("%s is reserved", s)
		}
	}
	for _, tc := range []struct{ prefix, prev, want string }{
		{"fd7a:7765:7400:1::/64", "fd7a:7765:7400:1::2", "fd7a:7765:7400:1::3"},
		// Past the last usable address, the walk wraps to the first.
		{"fd7a:7765:7400:1::/64", "fd7a:7765:7400:1:ffff:ffff:ffff:ff7f", "fd7a:7765:7400:1::2"},
		{"198.18.0.0/15", "198.19.255.254", "198.18.0.2"},
		{"198.18.0.0/15", "198.18.0.255", "198.18.1.0"},
	} {
		got := NextInstanceAddr(netip.MustParsePrefix(tc.prefix), netip.MustParseAddr(tc.prev))
		if got.String() != tc.want {
			t.Errorf("NextInstanceAddr(%s, %s) = %v, want %s", tc.prefix, tc.prev, got, tc.want)
		}
	}
}
