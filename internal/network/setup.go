package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/ipam"
)

func (m *Manager) checkInstance(inst Instance) error {
	switch {
	case inst.ID == uuid.Nil:
		return errors.New("network: instance has no id")
	case !inst.Addr.Is6() || inst.Addr.Is4In6() || inst.Addr.Zone() != "":
		return fmt.Errorf("network: instance address %v is not a plain IPv6 address", inst.Addr)
	case !m.cfg.Cluster.Contains(inst.Addr):
		// Outside the cluster prefix the address would be neither
		// masqueraded nor blocked for other instances.
		return fmt.Errorf("network: instance address %v is outside the cluster prefix %v", inst.Addr, m.cfg.Cluster)
	case inst.Port < 1 || inst.Port > 65535:
		return fmt.Errorf("network: instance port %d is not a TCP port", inst.Port)
	}
	return nil
}

// Setup makes the instance's network exist as asked and returns it. It
// converges: on an attachment that is already right it changes nothing (so
// a restarted agent adopts its running instances), and it repairs whatever
// is missing or different (a lost route, a changed port).
func (m *Manager) Setup(ctx context.Context, inst Instance) (Attachment, error) {
	if err := m.checkInstance(inst); err != nil {
		return Attachment{}, err
	}
	m.mu.RLock()
	att, err := m.setup(ctx, inst)
	m.mu.RUnlock()
	if errors.Is(err, errNoTable) {
		// Apply was not run yet, or the table was removed under us: write
		// all of it, this instance (whose veth now exists) included.
		m.log.WarnContext(ctx, "nftables table missing; applying it", "instance_id", inst.ID.String())
		m.mu.Lock()
		m.waitRemembered()
		err = m.apply(ctx)
		m.mu.Unlock()
	}
	if err != nil {
		return Attachment{}, fmt.Errorf("network: set up instance %s: %w", inst.ID, err)
	}
	return att, nil
}

func (m *Manager) setup(ctx context.Context, inst Instance) (Attachment, error) {
	hostIf := m.hostIf(inst.ID)
	nsPath := m.NetnsPath(inst.ID)
	log := m.log.With(slog.String("instance_id", inst.ID.String()), slog.String("host_if", hostIf))
	defer m.instMu.lock(hostIf)()

	old, host, release, err := m.claim(inst, hostIf, nsPath)
	if err != nil {
		return Attachment{}, err
	}
	defer release()
	// The namespace first: it is what the instance's processes live in,
	// and creating it is the only step that cannot be redone in place.
	nsFd, err := openOrCreateNetns(ctx, log, nsPath)
	if err != nil {
		return Attachment{}, err
	}
	defer unix.Close(nsFd)
	ns, err := handleAt(nsFd)
	if err != nil {
		return Attachment{}, err
	}
	defer ns.Close()

	host, eth0, err := m.ensureVeth(ctx, log, ns, nsFd, host, inst)
	if err != nil {
		return Attachment{}, err
	}
	var addr4 netip.Addr
	if m.cfg.IPv4.IsValid() {
		var release4 func()
		if addr4, release4, err = m.pickAddr4(ns, eth0, inst.ID, host.Attrs().Index); err != nil {
			return Attachment{}, err
		}
		defer release4()
	}
	want := []netip.Prefix{netip.PrefixFrom(inst.Addr, 128)}
	if addr4.IsValid() {
		want = append(want, netip.PrefixFrom(addr4, 32))
	}
	if err := configureInstanceSide(ns, eth0, want, addr4.IsValid()); err != nil {
		return Attachment{}, fmt.Errorf("in %s: %w", nsPath, err)
	}
	if err := m.configureNodeSide(host, want, addr4.IsValid()); err != nil {
		return Attachment{}, err
	}

	att := Attachment{ID: inst.ID, Netns: nsPath, HostIf: hostIf, Addr: inst.Addr, Addr4: addr4, Port: inst.Port}
	resolvConf, err := m.writeResolvConf(inst.ID)
	if err != nil {
		return Attachment{}, err
	}
	// The elements last: they are what lets traffic reach the instance.
	// att has no resolv.conf yet: the kernel's state, which List reads back
	// and writeElements compares, has none.
	if err := m.writeElements(ctx, old, att); err != nil {
		att.ResolvConf = resolvConf
		return att, err
	}
	att.ResolvConf = resolvConf
	return att, nil
}

// claim reads what the node has of the instance's veth and checks that the
// instance may have it and its address, before anything is made: the veth
// must be unowned or the instance's own, and no other link may be routed
// the address, nor another Setup under way have claimed it. It returns
// the veth's attachment as it was (zero if the instance has none yet), the
// veth (nil if missing), and the release of the address's claim.
func (m *Manager) claim(inst Instance, hostIf, nsPath string) (Attachment, netlink.Link, func(), error) {
	old, host, err := m.readAttachment(hostIf)
	if err != nil {
		return Attachment{}, nil, nil, err
	}
	if host != nil && old.ID != inst.ID {
		if old.ID != uuid.Nil || !m.pairedWithNetns(host, nsPath) {
			return Attachment{}, nil, nil, fmt.Errorf("%w: %s belongs to %s", ErrConflict, hostIf, old.ID)
		}
		// No alias, but its peer is this instance's eth0: ours, from a
		// Setup that stopped before naming it.
		old = Attachment{}
	}
	_, release, err := m.claimAddr(inst.ID, netlink.FAMILY_V6, func(routes map[netip.Prefix]int, taken func(netip.Addr) bool) (netip.Addr, error) {
		if idx, ok := routes[netip.PrefixFrom(inst.Addr, 128)]; ok && (host == nil || idx != host.Attrs().Index) {
			return netip.Addr{}, errAddrInUse(inst.Addr)
		}
		if taken(inst.Addr) {
			return netip.Addr{}, errAddrInUse(inst.Addr)
		}
		return inst.Addr, nil
	})
	if err != nil {
		return Attachment{}, nil, nil, err
	}
	return old, host, release, nil
}

// openOrCreateNetns opens the instance's namespace, creating it first if
// it is missing.
func openOrCreateNetns(ctx context.Context, log *slog.Logger, nsPath string) (int, error) {
	nsFd, err := openNetns(nsPath)
	if errors.Is(err, os.ErrNotExist) {
		log.InfoContext(ctx, "creating network namespace", "netns", nsPath)
		if err = createNetns(nsPath, prepareInstanceNetns); err == nil {
			nsFd, err = openNetns(nsPath)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	return nsFd, nil
}

// ensureVeth makes host (the node's end, nil if missing) and the
// namespace's eth0 the two ends of one veth, named for inst, and returns
// both ends.
func (m *Manager) ensureVeth(ctx context.Context, log *slog.Logger, ns *netlink.Handle, nsFd int, host netlink.Link, inst Instance) (netlink.Link, netlink.Link, error) {
	hostIf := m.hostIf(inst.ID)
	eth0, err := linkByName(ns, "eth0")
	if err != nil {
		return nil, nil, err
	}
	if host != nil && (eth0 == nil || !paired(host, eth0)) {
		// The veth leads elsewhere (the namespace was recreated): start the
		// pair again.
		log.WarnContext(ctx, "host veth is not paired with the instance's eth0; recreating it")
		if err := m.node.LinkDel(host); err != nil {
			return nil, nil, fmt.Errorf("delete %s: %w", hostIf, err)
		}
		host = nil
	}
	if host == nil {
		if host, eth0, err = m.createVeth(ctx, log, ns, nsFd, hostIf, eth0); err != nil {
			return nil, nil, err
		}
	}
	// The kernel ignores an alias given when a link is created, so it is
	// set apart; until then the veth is recognised by its pairing.
	if alias := aliasFor(inst); host.Attrs().Alias != alias {
		if err := m.node.LinkSetAlias(host, alias); err != nil {
			return nil, nil, fmt.Errorf("set alias of %s: %w", hostIf, err)
		}
	}
	return host, eth0, nil
}

// createVeth creates the pair hostIf (on the node) and eth0 (in the
// namespace open at nsFd), replacing a stray eth0 that leads nowhere of
// ours.
func (m *Manager) createVeth(ctx context.Context, log *slog.Logger, ns *netlink.Handle, nsFd int, hostIf string, stray netlink.Link) (host, eth0 netlink.Link, err error) {
	if stray != nil {
		if err := ns.LinkDel(stray); err != nil {
			return nil, nil, fmt.Errorf("delete stray eth0: %w", err)
		}
	}
	log.InfoContext(ctx, "creating veth pair")
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostIf},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(nsFd),
	}
	if err := m.node.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create veth %s: %w", hostIf, err)
	}
	if host, err = m.node.LinkByName(hostIf); err != nil {
		return nil, nil, err
	}
	if eth0, err = ns.LinkByName("eth0"); err != nil {
		return nil, nil, err
	}
	return host, eth0, nil
}

// configureInstanceSide brings lo and eth0 up, gives eth0 exactly the
// addresses want, and routes everything to the gateways (IPv4 only with
// ipv4).
func configureInstanceSide(ns *netlink.Handle, eth0 netlink.Link, want []netip.Prefix, ipv4 bool) error {
	lo, err := ns.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, step := range []func() error{
		func() error { return ensureUp(ns, lo) },
		func() error { return ensureUp(ns, eth0) },
		func() error { return ensureAddrs(ns, eth0, want, true) },
		func() error { return ensureDefaultRoute(ns, eth0, GatewayIPv6) },
		func() error {
			if !ipv4 {
				return nil
			}
			return ensureDefaultRoute(ns, eth0, GatewayIPv4)
		},
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// configureNodeSide brings the host veth up with the gateway addresses and
// routes the instance's addresses (want) to it.
func (m *Manager) configureNodeSide(host netlink.Link, want []netip.Prefix, ipv4 bool) error {
	gws := []netip.Prefix{netip.PrefixFrom(GatewayIPv6, 64)}
	if ipv4 {
		gws = append(gws, netip.PrefixFrom(GatewayIPv4, 32))
	}
	if err := ensureUp(m.node, host); err != nil {
		return err
	}
	// Only added, never pruned: the kernel gives the link its own
	// link-local address too, and that is fine.
	if err := ensureAddrs(m.node, host, gws, false); err != nil {
		return err
	}
	return m.ensureHostRoutes(host, want)
}

// writeElements puts att into the nftables sets in place of old, unless
// this manager wrote exactly att already. errNoTable: the table must be
// applied (which writes att's elements with everything else).
func (m *Manager) writeElements(ctx context.Context, old, att Attachment) error {
	if old == att && m.wroteAlready(att) {
		return nil
	}
	var del []Attachment
	if old.HostIf != "" && old != att {
		del = append(del, old) // deleted before att's are added: shared elements survive
	}
	return m.commitElements(ctx, []Attachment{att}, del)
}

// resolvConfPath is where the instance's resolv.conf is: beside its
// namespace's name, as `ip netns exec` expects.
func (m *Manager) resolvConfPath(id uuid.UUID) string {
	return filepath.Join(m.cfg.ResolvConfDir, filepath.Base(m.NetnsPath(id)), "resolv.conf")
}

// writeResolvConf writes the instance's resolv.conf, naming the resolvers
// the policy lets it reach, and returns its path; "" when instances have no
// egress or no resolvers (the image's own /etc/resolv.conf stays).
func (m *Manager) writeResolvConf(id uuid.UUID) (string, error) {
	if m.cfg.Uplink == "" || len(m.cfg.Resolvers) == 0 || m.cfg.ResolvConfDir == "" {
		return "", nil
	}
	var b strings.Builder
	for _, a := range m.cfg.Resolvers {
		fmt.Fprintf(&b, "nameserver %s\n", a.Unmap())
	}
	path := m.resolvConfPath(id)
	if cur, err := os.ReadFile(path); err == nil && string(cur) == b.String() {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	// Replaced, not rewritten: a running instance's bind mount keeps the
	// file it has, and never sees half of one.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("resolv.conf: %w", err)
	}
	return path, nil
}

// removeResolvConf removes the instance's resolv.conf and its directory.
func (m *Manager) removeResolvConf(id uuid.UUID) error {
	if m.cfg.ResolvConfDir == "" {
		return nil
	}
	if err := os.RemoveAll(filepath.Dir(m.resolvConfPath(id))); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}

// prepareInstanceNetns runs inside a new instance namespace. DAD would hold
// the instance's address "tentative" for a second or more after it is
// added, and router advertisements have no business arriving on eth0; the
// defaults apply to eth0 as it is created in the namespace. (Addresses are
// also added with NODAD, which covers a namespace made by something else.)
func prepareInstanceNetns() error {
	for _, kv := range [][2]string{
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_ra", "0"},
		{"net/ipv6/conf/all/accept_ra", "0"},
	} {
		if _, err := sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// pickAddr4 returns the instance's IPv4 address, claimed until release:
// the one it already has if any (connections and NAT state stay valid
// across an agent restart), else the one derived from its id, walking on
// past any the node already routes or another Setup has claimed. The range
// is node-local, so the node's routes and this manager's claims are the
// whole truth.
func (m *Manager) pickAddr4(ns *netlink.Handle, eth0 netlink.Link, id uuid.UUID, hostIdx int) (netip.Addr, func(), error) {
	addrs, err := ns.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	return m.claimAddr(id, netlink.FAMILY_V4, func(routes map[netip.Prefix]int, taken func(netip.Addr) bool) (netip.Addr, error) {
		free := func(a netip.Addr) bool {
			idx, ok := routes[netip.PrefixFrom(a, 32)]
			return (!ok || idx == hostIdx) && !taken(a)
		}
		for _, a := range addrs {
			p := toPrefix(a.IPNet)
			if p.Bits() == 32 && m.cfg.IPv4.Contains(p.Addr()) && free(p.Addr()) {
				return p.Addr(), nil
			}
		}
		a := ipam.InstanceAddr(m.cfg.IPv4, id)
		for range 1 << 12 {
			if free(a) {
				return a, nil
			}
			a = ipam.NextInstanceAddr(m.cfg.IPv4, a)
		}
		return netip.Addr{}, fmt.Errorf("no free IPv4 address in %v", m.cfg.IPv4)
	})
}

// ensureHostRoutes routes exactly want to host, removing routes of ours
// that no longer apply (the instance's address changed).
func (m *Manager) ensureHostRoutes(host netlink.Link, want []netip.Prefix) error {
	have := map[netip.Prefix]bool{}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		rs, err := m.node.RouteList(host, fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
		for _, r := range rs {
			p := toPrefix(r.Dst)
			if !m.ownsRoute(p) {
				continue
			}
			if !containsPrefix(want, p) {
				if err := m.node.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("delete route %v: %w", p, err)
				}
				continue
			}
			have[p] = true
		}
	}
	for _, p := range want {
		if have[p] {
			continue
		}
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
		if p.Addr().Is6() {
			r.Scope = netlink.SCOPE_UNIVERSE
		}
		if err := m.node.RouteReplace(r); err != nil {
			return fmt.Errorf("route %v to %s: %w", p, host.Attrs().Name, err)
		}
	}
	return nil
}
