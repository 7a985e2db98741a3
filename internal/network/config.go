package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"

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
	}
}

var nameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]*$`)

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
