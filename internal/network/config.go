package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/ipam"
)

// Config says how a node's instances are networked. The agent's own
// configuration (environment variables) fills it; DefaultConfig has the
// defaults.
type Config struct {
	// Cluster is the cluster's ULA prefix. Instances' addresses must lie in
	// it; they may not reach any address in it.
	Cluster netip.Prefix
	// IPv4 is the node-local range instances get an IPv4 address from, used
	// only to reach the IPv4 internet through NAT (much of it, GitHub's API
	// included, has no IPv6). The zero Prefix gives instances no IPv4.
	IPv4 netip.Prefix
	// Uplink is the interface that leads to the internet: instances' traffic
	// may leave only through it, translated to its address. Empty means
	// instances have no egress at all.
	Uplink string
	// Blocked lists more destinations instances may not reach, beyond the
	// private, link-local and special ranges that are always blocked: for
	// example the nodes' public addresses, or a provider's private network
	// numbered in public space.
	Blocked []netip.Prefix
	// MaxConnsPerInstance caps the connections the node (node-proxy,
	// health checks) may hold open to one instance at once; the next is
	// refused with a TCP reset. 0: no cap.
	MaxConnsPerInstance int
	// Resolvers are the DNS servers instances are given (ResolvConf) and
	// may reach on port 53 even where their range is blocked: a node's
	// resolver is often on a private network. Only with an Uplink.
	Resolvers []netip.Addr
	// Machine, for a simulated node (NodeNetns set), gives the node an
	// uplink of its own to the machine it runs on, through which its
	// instances reach the internet, translated twice: to the node's uplink
	// address, then to the machine's. Uplink names the node's end.
	Machine *MachineUplink
	// ResolvConfDir holds a resolv.conf per instance namespace,
	// ResolvConfDir/<namespace name>/resolv.conf: where `ip netns exec`
	// looks for one, and what the runtime mounts at /etc/resolv.conf.
	ResolvConfDir string

	// Table is the nftables table (family inet) this package owns.
	Table string
	// LinkPrefix starts the name of every host-side veth; the rules match
	// instance traffic by it, so it must name nothing else on the node.
	LinkPrefix string
	// NetnsDir and NetnsPrefix say where instances' named network namespaces
	// are: NetnsDir/NetnsPrefix<instance id>.
	NetnsDir    string
	NetnsPrefix string
	// NodeNetns is the network namespace that plays the node: empty for the
	// agent's own, which is what production uses. Tests point it at a
	// namespace of their own, so that turning on forwarding, the uplink and
	// the nftables table never touch the machine they run on.
	NodeNetns string

	Logger *slog.Logger
}

// DefaultConfig returns the production defaults, with the uplink still to be
// named by the operator.
func DefaultConfig() Config {
	return Config{
		Cluster:     ipam.DefaultCluster,
		IPv4:        ipam.DefaultIPv4,
		Table:       "zeitwork",
		LinkPrefix:  "zwh",
		NetnsDir:    "/run/netns",
		NetnsPrefix: "zw-",
		// Cloudflare's, reachable over both families without an account.
		Resolvers:     []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700:4700::1111")},
		ResolvConfDir: "/etc/netns",
	}
}

// MachineUplink is a simulated node's link to the machine: a veth whose
// node end is Config.Uplink and whose machine end is Link, numbered from
// Net. The machine forwards what comes from it to the internet,
// masqueraded, and nothing to itself or to another simulated node.
type MachineUplink struct {
	// Netns is the machine's network namespace; empty for the agent's own.
	// Tests point it at a namespace of theirs.
	Netns string
	// Link is the machine's end of the veth.
	Link string
	// LinkGlob matches the machine end of every simulated node's uplink
	// ("zwu*"), so that one node's traffic never enters another node.
	LinkGlob string
	// Net is a /30: the machine end has its first address, the node's end
	// the second (MachineUplinkNet). When another link on the machine
	// routes it, Apply takes the next free one.
	Net netip.Prefix
	// Table is the machine's nftables table for this node.
	Table string
}

// machineUplinkRange holds every simulated node's uplink /30: link-local
// space, which instances may never reach (alwaysBlocked4), clear of the
// instances' gateway (169.254.1.1) and of cloud metadata (169.254.169.254),
// and of the instances' own range, which is inside the node too.
var machineUplinkRange = netip.MustParsePrefix("169.254.192.0/18")

// MachineUplinkNet picks a simulated node's uplink /30 from its id. Two
// nodes on one machine collide with a chance of about n²/8192; Apply then
// takes the next free /30 rather than stealing the other node's route.
func MachineUplinkNet(node uuid.UUID) netip.Prefix {
	n := binary.BigEndian.Uint32(node[12:]) % (1 << (32 - machineUplinkRange.Bits() - 2))
	base := binary.BigEndian.Uint32(machineUplinkRange.Addr().AsSlice()) + n*4
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], base)
	return netip.PrefixFrom(netip.AddrFrom4(b), 30)
}

var (
	nameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]*$`)
	globRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]*\*$`)
)

func matchGlob(glob, name string) bool {
	return strings.HasPrefix(name, strings.TrimSuffix(glob, "*"))
}

func (c *Config) validate() error {
	var errs []error
	if err := ipam.ValidateCluster(c.Cluster); err != nil {
		errs = append(errs, err)
	}
	if c.IPv4.IsValid() {
		switch {
		case !c.IPv4.Addr().Is4():
			errs = append(errs, fmt.Errorf("IPv4 range %v is not IPv4", c.IPv4))
		case c.IPv4.Bits() > 24:
			errs = append(errs, fmt.Errorf("IPv4 range %v is smaller than a /24", c.IPv4))
		case c.IPv4 != c.IPv4.Masked():
			errs = append(errs, fmt.Errorf("IPv4 range %v has host bits set", c.IPv4))
		case c.IPv4.Contains(GatewayIPv4):
			errs = append(errs, fmt.Errorf("IPv4 range %v contains the gateway %v", c.IPv4, GatewayIPv4))
		}
	}
	for _, a := range c.Resolvers {
		if !a.IsValid() || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("resolver %v is not a plain address", a))
		}
	}
	if c.ResolvConfDir != "" && c.ResolvConfDir[0] != '/' {
		errs = append(errs, fmt.Errorf("resolv.conf directory %q is not an absolute path", c.ResolvConfDir))
	}
	if u := c.Machine; u != nil {
		switch {
		case c.NodeNetns == "":
			errs = append(errs, errors.New("a machine uplink is for a simulated node: set NodeNetns"))
		case c.Uplink == "":
			errs = append(errs, errors.New("a machine uplink needs Uplink, the node's end"))
		case !u.Net.Addr().Is4() || u.Net.Bits() != 30 || u.Net != u.Net.Masked():
			errs = append(errs, fmt.Errorf("machine uplink network %v is not an IPv4 /30", u.Net))
		case len(u.Link) > 15 || !nameRE.MatchString(u.Link) || !nameRE.MatchString(u.Table):
			errs = append(errs, fmt.Errorf("machine uplink link %q or table %q is not plain", u.Link, u.Table))
		case !globRE.MatchString(u.LinkGlob) || !matchGlob(u.LinkGlob, u.Link):
			errs = append(errs, fmt.Errorf("machine uplink glob %q does not match its link %q", u.LinkGlob, u.Link))
		}
	}
	if c.MaxConnsPerInstance < 0 {
		errs = append(errs, fmt.Errorf("connection limit %d is negative", c.MaxConnsPerInstance))
	}
	for _, p := range c.Blocked {
		if !p.IsValid() {
			errs = append(errs, errors.New("blocked prefix is invalid"))
		}
	}
	// Names end up inside nft's language and in file names: keep them plain.
	if c.Uplink != "" && (len(c.Uplink) > 15 || !nameRE.MatchString(c.Uplink)) {
		errs = append(errs, fmt.Errorf("uplink %q is not an interface name", c.Uplink))
	}
	if !nameRE.MatchString(c.Table) {
		errs = append(errs, fmt.Errorf("nftables table name %q is not plain", c.Table))
	}
	// 15 bytes is the kernel's limit for an interface name; 8 of them are
	// the instance's short id.
	if !nameRE.MatchString(c.LinkPrefix) || len(c.LinkPrefix) > 7 {
		errs = append(errs, fmt.Errorf("link prefix %q is not plain or longer than 7 bytes", c.LinkPrefix))
	}
	if c.Uplink != "" && len(c.Uplink) >= len(c.LinkPrefix) && c.Uplink[:len(c.LinkPrefix)] == c.LinkPrefix {
		errs = append(errs, fmt.Errorf("uplink %q starts with the link prefix %q", c.Uplink, c.LinkPrefix))
	}
	if !nameRE.MatchString(c.NetnsPrefix) {
		errs = append(errs, fmt.Errorf("netns prefix %q is not plain", c.NetnsPrefix))
	}
	if c.NetnsDir == "" || c.NetnsDir[0] != '/' {
		errs = append(errs, fmt.Errorf("netns directory %q is not an absolute path", c.NetnsDir))
	}
	return errors.Join(errs...)
}
