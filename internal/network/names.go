package network

import (
	"net/netip"

	"github.com/google/uuid"
)

// The instance's side of every veth uses the same gateways. Link-local
// addresses can be reused on every host veth, need nothing from the node's
// /64 and make the instance's routes identical everywhere; 169.254.1.1 is the
// IPv4 counterpart (the same choice Calico makes).
var (
	GatewayIPv6 = netip.MustParseAddr("fe80::1")
	GatewayIPv4 = netip.MustParseAddr("169.254.1.1")
)

// shortID is the part of an instance id used in interface names, which Linux
// limits to 15 bytes. It is the id's last 8 hex digits: in a UUIDv7 those are
// random, whereas the first ones are a timestamp shared by every instance
// created in the same minute. Two instances on one node sharing it is
// possible (about one in 10^6 for 100 instances); Setup detects it and
// refuses with ErrConflict rather than adopting the other instance's link.
func shortID(id uuid.UUID) string {
	s := id.String()
	return s[len(s)-8:]
}
