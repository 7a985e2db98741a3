package network

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// The policy is nftables' own language, applied with `nft -f`, rather than
// netlink messages built in Go: a file is one atomic transaction, it reads
// like the rules an operator would write (and `nft list table inet zeitwork`
// shows it back the same way), and the template is the whole policy in one
// place. Adding or removing an instance is a few set elements, not a rule
// rewrite.

//go:embed rules.nft.tmpl
var rulesText string

var rulesTemplate = template.Must(template.New("rules").
	Funcs(template.FuncMap{"join": strings.Join}).
	Parse(rulesText))

// Destinations no instance may reach, whatever the operator configures.
// Beyond RFC 1918 and ULA: 100.64.0.0/10 is the nodes' Tailscale network;
// cloud metadata and provider services live at 169.254.169.254 (link-local,
// blocked whole), fd00:ec2::254 (AWS over IPv6, inside fc00::/7) and
// 168.63.129.16 (Azure's wire server, in public space); 64:ff9b::/96 is
// NAT64, through which a translator on the node's network would reach every
// blocked IPv4 range; the rest are loopback, multicast and special-purpose
// blocks that have no business leaving an instance.
var (
	alwaysBlocked6 = []netip.Prefix{
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped
		netip.MustParsePrefix("64:ff9b::/96"),   // well-known NAT64 (RFC 6052)
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64 (RFC 8215)
		netip.MustParsePrefix("100::/64"),       // discard
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fd00:ec2::254/128"), // AWS metadata; inside fc00::/7, named for the reader
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("fec0::/10"), // old site-local
		netip.MustParsePrefix("ff00::/8"),
	}
	alwaysBlocked4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("168.63.129.16/32"), // Azure wire server and DNS
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("240.0.0.0/4"),
	}
)

type rulesData struct {
	Table, LinkGlob, Uplink string
	Cluster, IPv4           netip.Prefix
	Blocked6, Blocked4      []string
	Addr6, Addr4, Ports     []string
	Resolvers6, Resolvers4  []string
	MaxConns                int
}

// renderRules renders the whole table for cfg with the elements of atts.
// The output depends only on its arguments, in a stable order.
func renderRules(cfg Config, atts []Attachment) string {
	d := rulesData{
		Table:    cfg.Table,
		LinkGlob: cfg.LinkPrefix + "*",
		Uplink:   cfg.Uplink,
		Cluster:  cfg.Cluster,
		IPv4:     cfg.IPv4,
		MaxConns: cfg.MaxConnsPerInstance,
	}
	blocked := slices.Concat(alwaysBlocked6, alwaysBlocked4, []netip.Prefix{cfg.Cluster}, cfg.Blocked)
	if cfg.IPv4.IsValid() {
		blocked = append(blocked, cfg.IPv4)
	}
	for _, p := range mergePrefixes(blocked) {
		if p.Addr().Is4() {
			d.Blocked4 = append(d.Blocked4, p.String())
		} else {
			d.Blocked6 = append(d.Blocked6, p.String())
		}
	}
	if cfg.Uplink != "" {
		// The instances' resolvers are reachable on port 53 even in a
		// blocked range; without egress there is nothing to resolve for.
		for _, a := range cfg.Resolvers {
			if a.Is4() || a.Is4In6() {
				d.Resolvers4 = append(d.Resolvers4, a.Unmap().String())
			} else {
				d.Resolvers6 = append(d.Resolvers6, a.String())
			}
		}
		slices.Sort(d.Resolvers4)
		d.Resolvers4 = slices.Compact(d.Resolvers4)
		slices.Sort(d.Resolvers6)
		d.Resolvers6 = slices.Compact(d.Resolvers6)
	}
	atts = slices.Clone(atts)
	slices.SortFunc(atts, func(a, b Attachment) int { return strings.Compare(a.HostIf, b.HostIf) })
	for _, a := range atts {
		e := elementsOf(a)
		d.Addr6 = append(d.Addr6, e.addr6...)
		d.Addr4 = append(d.Addr4, e.addr4...)
		d.Ports = append(d.Ports, e.ports...)
	}
	var b strings.Builder
	if err := rulesTemplate.Execute(&b, d); err != nil {
		panic("network: rules template: " + err.Error()) // a bug, caught by tests
	}
	return b.String()
}

type elements struct{ addr6, addr4, ports []string }

func elementsOf(a Attachment) elements {
	var e elements
	if a.HostIf == "" {
		return e
	}
	q := strconv.Quote(a.HostIf)
	if a.Addr.IsValid() {
		e.addr6 = append(e.addr6, q+" . "+a.Addr.String())
	}
	if a.Addr4.IsValid() {
		e.addr4 = append(e.addr4, q+" . "+a.Addr4.String())
	}
	if a.Port > 0 {
		e.ports = append(e.ports, q+" . "+strconv.Itoa(a.Port))
	}
	return e
}

// elementScript adds add's elements and removes del's, in one transaction.
// nft 1.0.6 (Debian 12) has no "destroy": deleting an element that is not
// there fails the whole file, so each deletion is preceded by an add of the
// same element, which makes it always succeed.
func elementScript(table string, add, del []Attachment) string {
	var b strings.Builder
	line := func(verb, set, elem string) {
		fmt.Fprintf(&b, "%s element inet %s %s { %s }\n", verb, table, set, elem)
	}
	for _, a := range del {
		e := elementsOf(a)
		for _, s := range []struct {
			set   string
			elems []string
		}{{"inst_addr6", e.addr6}, {"inst_addr4", e.addr4}, {"inst_port", e.ports}} {
			for _, el := range s.elems {
				line("add", s.set, el)
				line("delete", s.set, el)
			}
		}
	}
	for _, a := range add {
		e := elementsOf(a)
		for _, el := range e.addr6 {
			line("add", "inst_addr6", el)
		}
		for _, el := range e.addr4 {
			line("add", "inst_addr4", el)
		}
		for _, el := range e.ports {
			line("add", "inst_port", el)
		}
	}
	return b.String()
}

// mergePrefixes sorts ps and drops every prefix contained in another: nft
// refuses overlapping elements in an interval set.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	for i := range ps {
		ps[i] = ps[i].Masked()
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// errNoTable is returned by runNft when the script failed because the table
// (or one of its sets) does not exist.
var errNoTable = errors.New("nftables table or set missing")

// runNft applies script with `nft -f -` in the node's network namespace.
func (m *Manager) runNft(ctx context.Context, script string) error {
	return m.runNftIn(ctx, m.inNode, script)
}

// runNftIn applies script with `nft -f -` in the namespace in enters.
func (m *Manager) runNftIn(ctx context.Context, in func(func() error) error, script string) error {
	m.nftRuns.Add(1)
	return in(func() error {
		cmd := exec.CommandContext(ctx, m.nftPath, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "No such file or directory") {
				return fmt.Errorf("nft: %w: %s", errNoTable, msg)
			}
			return fmt.Errorf("nft: %w: %s", err, msg)
		}
		return nil
	})
}
