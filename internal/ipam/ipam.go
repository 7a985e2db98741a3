// Package ipam is the cluster's address plan: the ULA prefix the cluster's
// instances are numbered from, the /64 each node owns in it, the address an
// instance gets in its node's /64 (and in the node-local IPv4 range), and
// which addresses are never handed out. It is pure arithmetic, with no state
// and no kernel, so the control plane (registration, instance placement)
// and the node (network setup) compute the same answers without sharing
// anything but the inputs.
package ipam

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/uuid"
)

// DefaultCluster is the cluster's ULA /48. fd00::/8 prefixes are meant to be
// picked at random (RFC 4193) so that two private networks joined later do not
// clash; this one spells "zwt" (7a 77 74) so that it is recognisable in a
// packet capture, and stays clear of fd00::/64, which hosts commonly use.
var DefaultCluster = netip.MustParsePrefix("fd7a:7765:7400::/48")

// DefaultIPv4 is the node-local range instances' IPv4 egress addresses come
// from. It is deliberately not the 100.96.0.0/11 that is often suggested:
// that lies inside 100.64.0.0/10, where Tailscale, the nodes' private
// network, numbers its peers, and a /32 route to an instance would shadow a
// peer with the same address. 198.18.0.0/15 is reserved for benchmarking
// (RFC 2544), is routed nowhere, and is not used by the common overlay
// networks. It is the same range on every node: an instance's IPv4 address is
// only ever seen by its own node, which translates it on the way out, so it
// needs no cluster-wide allocation.
var DefaultIPv4 = netip.MustParsePrefix("198.18.0.0/15")

// ValidateCluster says whether p can be a cluster prefix: IPv6, and short
// enough to hold 65536 node /64s.
func ValidateCluster(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("cluster prefix %v is not an IPv6 prefix", p)
	}
	if p.Bits() > 48 {
		return fmt.Errorf("cluster prefix %v is longer than /48: it cannot hold a /64 for each of 65536 nodes", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("cluster prefix %v has host bits set (want %v)", p, p.Masked())
	}
	return nil
}

// NodePrefix returns the index-th /64 of the cluster prefix: the node whose
// registration was given index owns it. The database hands out indexes (its
// unique key makes that race-free); this only does the arithmetic, so that the
// agent, the scheduler and tests agree on it. It panics if cluster is not
// valid (see ValidateCluster): configuration is validated at start.
func NodePrefix(cluster netip.Prefix, index uint16) netip.Prefix {
	if err := ValidateCluster(cluster); err != nil {
		panic("ipam.NodePrefix: " + err.Error())
	}
	b := cluster.Addr().As16()
	binary.BigEndian.PutUint16(b[6:8], index)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// InstanceAddr derives an instance's address in prefix (a node's /64, or the
// IPv4 range) from its id. Deriving rather than counting means no state: the
// address is the same whoever computes it. The id is hashed rather than its
// bits copied because UUIDv7 ids begin with a timestamp, so ids made in the
// same millisecond would crowd together. Two ids can still land on the same
// address; the database's unique key on instance addresses catches that for
// IPv6 (and the node's network setup for the node-local IPv4), and the
// caller retries with NextInstanceAddr.
//
// The result is never a reserved address (see reserved).
func InstanceAddr(prefix netip.Prefix, id uuid.UUID) netip.Addr {
	sum := sha256.Sum256(id[:])
	prefix = prefix.Masked()
	base := prefix.Addr().AsSlice()
	out := make([]byte, len(base))
	for i := range base {
		keep := prefixMaskByte(prefix.Bits(), i)
		out[i] = base[i]&keep | sum[i]&^keep
	}
	a, _ := netip.AddrFromSlice(out)
	if reserved(prefix, a) {
		return NextInstanceAddr(prefix, a)
	}
	return a
}

// NextInstanceAddr is the address to try after prev when prev is taken: the
// next one in prefix that is not reserved, wrapping around at the end. A walk
// is enough, since a collision is rare and the walk is deterministic.
func NextInstanceAddr(prefix netip.Prefix, prev netip.Addr) netip.Addr {
	prefix = prefix.Masked()
	a := prev
	for {
		a = a.Next()
		if !a.IsValid() || !prefix.Contains(a) {
			a = prefix.Addr()
		}
		if !reserved(prefix, a) {
			return a
		}
		if a == prev {
			// Only a prefix with no usable address at all gets here
			// (a /127, /31 or longer); configuration rejects those.
			panic(fmt.Sprintf("ipam: prefix %v has no usable instance address", prefix))
		}
	}
}

// reserved says whether a may not be given to an instance:
//   - the first address (the subnet-router anycast address in IPv6, the
//     network address in IPv4);
//   - the second, which is kept for the node itself should it ever need an
//     address of its own in the prefix (a gateway, a resolver);
//   - in IPv6, the top 128 interface ids, reserved for subnet anycast
//     (RFC 2526); in IPv4, the broadcast address.
func reserved(prefix netip.Prefix, a netip.Addr) bool {
	first := prefix.Addr()
	if a == first || a == first.Next() {
		return true
	}
	top := 1
	if a.Is6() {
		top = 128
	}
	last := lastAddr(prefix)
	for range top {
		if a == last {
			return true
		}
		last = last.Prev()
	}
	return false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		b[i] |= ^prefixMaskByte(p.Bits(), i)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// prefixMaskByte is the i-th byte of a mask with bits leading ones.
func prefixMaskByte(bits, i int) byte {
	switch n := bits - 8*i; {
	case n >= 8:
		return 0xff
	case n <= 0:
		return 0
	default:
		return ^byte(0xff >> n)
	}
}
