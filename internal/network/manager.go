package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/ipam"
)

var (
	// ErrConflict means another instance already holds the link name that
	// this instance's id maps to (their ids share the last 8 hex digits).
	ErrConflict = errors.New("network: link name taken by another instance")
	// ErrAddrInUse means the instance's IPv6 address is already routed to
	// something else on this node; the caller picks NextInstanceAddr.
	ErrAddrInUse = errors.New("network: address already in use on this node")
)

// Instance is what Setup needs to know about an instance.
type Instance struct {
	ID uuid.UUID
	// Addr is the instance's IPv6 address, in the node's /64 of the cluster
	// (see InstanceAddr), recorded in the database.
	Addr netip.Addr
	// Port is the TCP port the node may open connections to.
	Port int
}

// Attachment is an instance's network as it exists on the node.
type Attachment struct {
	ID uuid.UUID
	// Netns is the path of the instance's network namespace, to be given to
	// the runtime as the container's network namespace. Empty if missing.
	Netns string
	// HostIf is the host-side veth. Empty if missing.
	HostIf string
	Addr   netip.Addr
	// Addr4 is the instance's node-local IPv4 address, for egress only;
	// invalid when IPv4 is off.
	Addr4 netip.Addr
	Port  int
}

// Complete says whether both the namespace and the veth exist. List also
// returns incomplete attachments (what a crash mid-Setup leaves), which
// Setup repairs and Teardown removes.
func (a Attachment) Complete() bool { return a.Netns != "" && a.HostIf != "" }

// Manager sets up and tears down instances' networks on one node. Its
// methods are safe for concurrent use; they are serialised, since Apply
// rewrites the table from what exists and must not race a Setup.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	nftPath string

	mu     sync.Mutex
	node   *netlink.Handle
	nodeFd int // the node's namespace when cfg.NodeNetns is set, else -1
	// written records the set elements this manager has written, by host
	// veth, so that Setup on an unchanged attachment skips running nft
	// (a fork and about 20 ms). If the table is changed behind its back,
	// the next Apply rewrites it from the kernel's state.
	written map[string]Attachment
}

// New checks cfg and opens the node's namespace. It changes nothing on the
// node: Apply does that.
func New(cfg Config) (*Manager, error) {
	def := DefaultConfig()
	if cfg.Table == "" {
		cfg.Table = def.Table
	}
	if cfg.LinkPrefix == "" {
		cfg.LinkPrefix = def.LinkPrefix
	}
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = def.NetnsDir
	}
	if cfg.NetnsPrefix == "" {
		cfg.NetnsPrefix = def.NetnsPrefix
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nftPath, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("network: nft (nftables) is required: %w", err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, nftPath: nftPath, nodeFd: -1, written: map[string]Attachment{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeNetns != "" {
		if m.nodeFd, err = openNetns(cfg.NodeNetns); err != nil {
			return nil, fmt.Errorf("network: node namespace: %w", err)
		}
		m.node, err = handleAt(m.nodeFd)
	} else {
		m.node, err = netlink.NewHandle()
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("network: netlink: %w", err)
	}
	return m, nil
}

// Close releases the manager's handles. Instances' networks stay.
func (m *Manager) Close() error {
	if m.node != nil {
		m.node.Close()
	}
	if m.nodeFd >= 0 {
		unix.Close(m.nodeFd)
		m.nodeFd = -1
	}
	return nil
}

// NetnsPath is where the instance's network namespace is pinned.
func (m *Manager) NetnsPath(id uuid.UUID) string {
	return filepath.Join(m.cfg.NetnsDir, m.cfg.NetnsPrefix+id.String())
}

func (m *Manager) hostIf(id uuid.UUID) string { return m.cfg.LinkPrefix + shortID(id) }

// inNode runs fn in the node's namespace.
func (m *Manager) inNode(fn func() error) error {
	if m.nodeFd < 0 {
		return fn()
	}
	return inNetns(m.nodeFd, fn)
}

// handleAt opens a netlink handle whose sockets live in the namespace open
// at fd (sockets keep the namespace they were made in).
func handleAt(fd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := inNetns(fd, func() (err error) {
		h, err = netlink.NewHandle()
		return err
	})
	return h, err
}

// Apply makes the node ready for instances and (re)writes the policy: it
// turns on forwarding and replaces the nftables table, atomically, with one
// rendered from the configuration and the attachments that exist. It is
// idempotent and cheap; the agent calls it at start and on every
// convergence pass, which also repairs the table if something (a firewall
// reload running `nft flush ruleset`) removed it.
func (m *Manager) Apply(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apply(ctx)
}

func (m *Manager) apply(ctx context.Context) error {
	if err := m.inNode(m.enableForwarding); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	atts, err := m.list()
	if err != nil {
		return err
	}
	clear(m.written)
	if err := m.runNft(ctx, renderRules(m.cfg, atts)); err != nil {
		return fmt.Errorf("network: apply rules: %w", err)
	}
	for _, a := range atts {
		if a.HostIf != "" {
			m.written[a.HostIf] = a
		}
	}
	return nil
}

func (m *Manager) enableForwarding() error {
	if m.cfg.Uplink != "" {
		// With forwarding on, an interface whose accept_ra is 1 stops
		// accepting router advertisements; an uplink configured by SLAAC
		// would lose its default route when the last one expires. 2 keeps
		// accepting them while forwarding.
		// Only 1 is changed: 0 (none accepted) and 2 (already right) stay.
		name := "net/ipv6/conf/" + m.cfg.Uplink + "/accept_ra"
		b, err := os.ReadFile("/proc/sys/" + name)
		switch {
		case errors.Is(err, os.ErrNotExist):
			m.log.Warn("uplink interface does not exist: instances have no egress until it does", "uplink", m.cfg.Uplink)
		case err != nil:
			return err
		case strings.TrimSpace(string(b)) == "1":
			if _, err := sysctl(name, "2"); err != nil {
				return err
			}
			m.log.Info("uplink keeps accepting router advertisements while forwarding (accept_ra 1 -> 2)", "uplink", m.cfg.Uplink)
		}
	}
	if _, err := sysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
		return err
	}
	if m.cfg.IPv4.IsValid() {
		if _, err := sysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	return nil
}

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
	m.mu.Lock()
	defer m.mu.Unlock()
	att, err := m.setup(ctx, inst)
	if err != nil {
		return Attachment{}, fmt.Errorf("network: set up instance %s: %w", inst.ID, err)
	}
	return att, nil
}

func (m *Manager) setup(ctx context.Context, inst Instance) (Attachment, error) {
	hostIf := m.hostIf(inst.ID)
	nsPath := m.NetnsPath(inst.ID)
	log := m.log.With(slog.String("instance_id", inst.ID.String()), slog.String("host_if", hostIf))

	old, host, err := m.readAttachment(hostIf)
	if err != nil {
		return Attachment{}, err
	}
	if host != nil && old.ID != inst.ID {
		if old.ID != uuid.Nil || !m.pairedWithNetns(host, nsPath) {
			return Attachment{}, fmt.Errorf("%w: %s belongs to %s", ErrConflict, hostIf, old.ID)
		}
		// No alias, but its peer is this instance's eth0: ours, from a
		// Setup that stopped before naming it.
		old = Attachment{}
	}
	// The address is checked against what the node already routes before
	// anything is made for it.
	routes, err := m.routesByDst()
	if err != nil {
		return Attachment{}, err
	}
	if idx, ok := routes[netip.PrefixFrom(inst.Addr, 128)]; ok && (host == nil || idx != host.Attrs().Index) {
		return Attachment{}, fmt.Errorf("%w: %v", ErrAddrInUse, inst.Addr)
	}

	// The namespace first: it is what the instance's processes live in,
	// and creating it is the only step that cannot be redone in place.
	nsFd, err := openNetns(nsPath)
	if errors.Is(err, os.ErrNotExist) {
		log.InfoContext(ctx, "creating network namespace", "netns", nsPath)
		if err = createNetns(nsPath, prepareInstanceNetns); err == nil {
			nsFd, err = openNetns(nsPath)
		}
	}
	if err != nil {
		return Attachment{}, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	defer unix.Close(nsFd)
	ns, err := handleAt(nsFd)
	if err != nil {
		return Attachment{}, err
	}
	defer ns.Close()

	eth0, err := linkByName(ns, "eth0")
	if err != nil {
		return Attachment{}, err
	}
	if host != nil && (eth0 == nil || !paired(host, eth0)) {
		// The veth leads elsewhere (the namespace was recreated): start the
		// pair again.
		log.WarnContext(ctx, "host veth is not paired with the instance's eth0; recreating it")
		if err := m.node.LinkDel(host); err != nil {
			return Attachment{}, fmt.Errorf("delete %s: %w", hostIf, err)
		}
		host = nil
	}
	alias := aliasFor(inst)
	if host == nil {
		if eth0 != nil {
			if err := ns.LinkDel(eth0); err != nil {
				return Attachment{}, fmt.Errorf("delete stray eth0: %w", err)
			}
		}
		log.InfoContext(ctx, "creating veth pair")
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: hostIf},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(nsFd),
		}
		if err := m.node.LinkAdd(veth); err != nil {
			return Attachment{}, fmt.Errorf("create veth %s: %w", hostIf, err)
		}
		if host, err = m.node.LinkByName(hostIf); err != nil {
			return Attachment{}, err
		}
		if eth0, err = ns.LinkByName("eth0"); err != nil {
			return Attachment{}, err
		}
	}
	// The kernel ignores an alias given when a link is created, so it is
	// set apart; until then the veth is recognised by its pairing.
	if host.Attrs().Alias != alias {
		if err := m.node.LinkSetAlias(host, alias); err != nil {
			return Attachment{}, fmt.Errorf("set alias of %s: %w", hostIf, err)
		}
	}

	var addr4 netip.Addr
	if m.cfg.IPv4.IsValid() {
		if addr4, err = m.pickAddr4(ns, eth0, inst.ID, host.Attrs().Index, routes); err != nil {
			return Attachment{}, err
		}
	}

	// The instance's side.
	lo, err := ns.LinkByName("lo")
	if err != nil {
		return Attachment{}, err
	}
	want := []netip.Prefix{netip.PrefixFrom(inst.Addr, 128)}
	if addr4.IsValid() {
		want = append(want, netip.PrefixFrom(addr4, 32))
	}
	for _, step := range []func() error{
		func() error { return ensureUp(ns, lo) },
		func() error { return ensureUp(ns, eth0) },
		func() error { return ensureAddrs(ns, eth0, want, true) },
		func() error { return ensureDefaultRoute(ns, eth0, GatewayIPv6) },
		func() error {
			if !addr4.IsValid() {
				return nil
			}
			return ensureDefaultRoute(ns, eth0, GatewayIPv4)
		},
	} {
		if err := step(); err != nil {
			return Attachment{}, fmt.Errorf("in %s: %w", nsPath, err)
		}
	}

	// The node's side.
	gws := []netip.Prefix{netip.PrefixFrom(GatewayIPv6, 64)}
	if addr4.IsValid() {
		gws = append(gws, netip.PrefixFrom(GatewayIPv4, 32))
	}
	if err := ensureUp(m.node, host); err != nil {
		return Attachment{}, err
	}
	// Only added, never pruned: the kernel gives the link its own
	// link-local address too, and that is fine.
	if err := ensureAddrs(m.node, host, gws, false); err != nil {
		return Attachment{}, err
	}
	if err := m.ensureHostRoutes(host, want); err != nil {
		return Attachment{}, err
	}

	att := Attachment{ID: inst.ID, Netns: nsPath, HostIf: hostIf, Addr: inst.Addr, Addr4: addr4, Port: inst.Port}
	if w, ok := m.written[hostIf]; ok && w == att && old == att {
		return att, nil
	}
	var del []Attachment
	if old.HostIf != "" && old != att {
		del = append(del, old) // deleted before att's are added: shared elements survive
	}
	err = m.runNft(ctx, elementScript(m.cfg.Table, []Attachment{att}, del))
	if errors.Is(err, errNoTable) {
		// Apply was not run yet, or the table was removed under us:
		// write all of it, this instance included.
		log.WarnContext(ctx, "nftables table missing; applying it")
		err = m.apply(ctx)
	}
	if err != nil {
		return Attachment{}, err
	}
	m.written[hostIf] = att
	return att, nil
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

// pickAddr4 returns the instance's IPv4 address: the one it already has if
// any (connections and NAT state stay valid across an agent restart), else
// the one derived from its id, walking on past any the node already routes.
// The range is node-local, so the node's routes are the whole truth.
func (m *Manager) pickAddr4(ns *netlink.Handle, eth0 netlink.Link, id uuid.UUID, hostIdx int, routes map[netip.Prefix]int) (netip.Addr, error) {
	addrs, err := ns.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		p := toPrefix(a.IPNet)
		if p.Bits() == 32 && m.cfg.IPv4.Contains(p.Addr()) {
			if idx, ok := routes[p]; !ok || idx == hostIdx {
				return p.Addr(), nil
			}
		}
	}
	a := ipam.InstanceAddr(m.cfg.IPv4, id)
	for range 1 << 12 {
		if idx, ok := routes[netip.PrefixFrom(a, 32)]; !ok || idx == hostIdx {
			return a, nil
		}
		a = ipam.NextInstanceAddr(m.cfg.IPv4, a)
	}
	return netip.Addr{}, fmt.Errorf("no free IPv4 address in %v", m.cfg.IPv4)
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

// ownsRoute says whether p is an instance route this package makes.
func (m *Manager) ownsRoute(p netip.Prefix) bool {
	switch {
	case !p.IsValid():
		return false
	case p.Addr().Is6():
		return p.Bits() == 128 && m.cfg.Cluster.Contains(p.Addr())
	default:
		return p.Bits() == 32 && m.cfg.IPv4.IsValid() && m.cfg.IPv4.Contains(p.Addr())
	}
}

// routesByDst maps the node's instance routes (/128 in the cluster, /32 in
// the IPv4 range) to the link each leads to.
func (m *Manager) routesByDst() (map[netip.Prefix]int, error) {
	out := map[netip.Prefix]int{}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		rs, err := retryDump(func() ([]netlink.Route, error) { return m.node.RouteListFiltered(fam, &netlink.Route{}, 0) })
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if p := toPrefix(r.Dst); m.ownsRoute(p) {
				out[p] = r.LinkIndex
			}
		}
	}
	return out, nil
}

// Teardown removes the instance's network: its set elements, its veth
// (which takes its routes with it) and its namespace. Missing pieces are
// not an error. The instance's processes must be gone first, or the
// namespace lives on, unnamed, until they exit.
func (m *Manager) Teardown(ctx context.Context, id uuid.UUID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	hostIf := m.hostIf(id)
	var errs []error
	att, host, err := m.readAttachment(hostIf)
	switch {
	case err != nil:
		errs = append(errs, err)
	case host != nil && att.ID == uuid.Nil && m.pairedWithNetns(host, m.NetnsPath(id)):
		// Ours, from a Setup that stopped before naming it: no elements yet.
		if err := m.node.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
		}
	case host != nil && att.ID != id:
		// Same short id, different instance: not ours to remove.
		m.log.WarnContext(ctx, "not removing a veth that belongs to another instance", "host_if", hostIf, "owner", att.ID.String(), "instance_id", id.String())
	case host != nil:
		// Elements first: from here on the instance can send nothing and
		// be reached by nothing, even if deleting the link fails.
		err := m.runNft(ctx, elementScript(m.cfg.Table, nil, []Attachment{att}))
		if err != nil && !errors.Is(err, errNoTable) {
			errs = append(errs, err)
			break
		}
		delete(m.written, hostIf)
		if err := m.node.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
		}
	}
	if err := removeNetns(m.NetnsPath(id)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: tear down instance %s: %w", id, err)
	}
	return nil
}

// List returns every instance network this package finds on the node,
// complete or not, read from the kernel alone.
func (m *Manager) List() ([]Attachment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.list()
}

func (m *Manager) list() ([]Attachment, error) {
	byID := map[uuid.UUID]*Attachment{}
	var order []uuid.UUID
	get := func(id uuid.UUID) *Attachment {
		if a, ok := byID[id]; ok {
			return a
		}
		a := &Attachment{ID: id}
		byID[id] = a
		order = append(order, id)
		return a
	}

	links, err := m.ownLinks()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]*Attachment{}
	for _, l := range links {
		a, ok := m.attachmentOf(l)
		if !ok {
			// A Setup that stopped between creating the veth and naming
			// it; Setup or Teardown of its instance (found by its
			// namespace) finishes the job.
			m.log.Warn("veth with Zeitwork's prefix but no instance alias", "host_if", l.Attrs().Name)
			continue
		}
		p := get(a.ID)
		p.HostIf, p.Port = a.HostIf, a.Port
		byIndex[l.Attrs().Index] = p
	}
	routes, err := m.routesByDst()
	if err != nil {
		return nil, err
	}
	for p, idx := range routes {
		if a := byIndex[idx]; a != nil {
			if p.Addr().Is6() {
				a.Addr = p.Addr()
			} else {
				a.Addr4 = p.Addr()
			}
		}
	}

	ents, err := os.ReadDir(m.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), m.cfg.NetnsPrefix)
		if !ok {
			continue
		}
		id, err := uuid.Parse(rest)
		if err != nil || id.String() != rest {
			continue
		}
		get(id).Netns = filepath.Join(m.cfg.NetnsDir, e.Name())
	}

	out := make([]Attachment, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// readAttachment reads what the node knows of hostIf: its alias and its
// routes. host is nil if there is no such link.
func (m *Manager) readAttachment(hostIf string) (att Attachment, host netlink.Link, err error) {
	host, err = linkByName(m.node, hostIf)
	if err != nil || host == nil {
		return Attachment{}, nil, err
	}
	att, ok := m.attachmentOf(host)
	if !ok {
		// A link with our name but not our alias: treat it as another
		// instance's, so that nothing here deletes it.
		return Attachment{ID: uuid.Nil, HostIf: hostIf}, host, nil
	}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		rs, err := m.node.RouteList(host, fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return Attachment{}, nil, err
		}
		for _, r := range rs {
			p := toPrefix(r.Dst)
			if !m.ownsRoute(p) {
				continue
			}
			if p.Addr().Is6() {
				att.Addr = p.Addr()
			} else {
				att.Addr4 = p.Addr()
			}
		}
	}
	att.Netns = m.NetnsPath(att.ID)
	if _, err := os.Stat(att.Netns); err != nil {
		att.Netns = ""
	}
	return att, host, nil
}

// The host veth's alias says whose it is and which port the node may use,
// so that both survive an agent restart without a state file.
const aliasPrefix = "zeitwork instance="

func aliasFor(inst Instance) string {
	return aliasPrefix + inst.ID.String() + " port=" + strconv.Itoa(inst.Port)
}

func (m *Manager) attachmentOf(l netlink.Link) (Attachment, bool) {
	rest, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix)
	if !ok {
		return Attachment{}, false
	}
	idText, portText, ok := strings.Cut(rest, " port=")
	if !ok {
		return Attachment{}, false
	}
	id, err := uuid.Parse(idText)
	if err != nil || m.hostIf(id) != l.Attrs().Name {
		return Attachment{}, false
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return Attachment{}, false
	}
	return Attachment{ID: id, HostIf: l.Attrs().Name, Port: port}, true
}

// ownLinks returns the node's links whose name has our prefix.
func (m *Manager) ownLinks() ([]netlink.Link, error) {
	all, err := retryDump(m.node.LinkList)
	if err != nil {
		return nil, err
	}
	var out []netlink.Link
	for _, l := range all {
		if strings.HasPrefix(l.Attrs().Name, m.cfg.LinkPrefix) {
			out = append(out, l)
		}
	}
	return out, nil
}

// Reset removes everything this package made on the node: the nftables
// table, every veth and every namespace with its prefixes. Forwarding stays
// on (something else may rely on it). For decommissioning a node and for
// tests; running instances lose their network.
func (m *Manager) Reset(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	t := m.cfg.Table
	clear(m.written)
	if err := m.runNft(ctx, "table inet "+t+" {}\ndelete table inet "+t+"\n"); err != nil {
		errs = append(errs, err)
	}
	links, err := m.ownLinks()
	errs = append(errs, err)
	for _, l := range links {
		if err := m.node.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	ents, err := os.ReadDir(m.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), m.cfg.NetnsPrefix) {
			errs = append(errs, removeNetns(filepath.Join(m.cfg.NetnsDir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: reset: %w", err)
	}
	return nil
}

// pairedWithNetns says whether host's peer is eth0 in the namespace at
// nsPath.
func (m *Manager) pairedWithNetns(host netlink.Link, nsPath string) bool {
	fd, err := openNetns(nsPath)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	h, err := handleAt(fd)
	if err != nil {
		return false
	}
	defer h.Close()
	eth0, err := linkByName(h, "eth0")
	return err == nil && eth0 != nil && paired(host, eth0)
}

// paired says whether host and eth0 are the two ends of one veth. Each
// end's IFLA_LINK is its peer's index (in the peer's namespace).
func paired(host, eth0 netlink.Link) bool {
	_, ok := host.(*netlink.Veth)
	return ok && host.Attrs().ParentIndex == eth0.Attrs().Index && eth0.Attrs().ParentIndex == host.Attrs().Index
}

func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	return l, err
}

func ensureUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureAddrs gives l the addresses want (without DAD, so they are usable
// at once). With prune, it also removes other global addresses, so that an
// instance whose address changed does not keep the old one.
func ensureAddrs(h *netlink.Handle, l netlink.Link, want []netip.Prefix, prune bool) error {
	have, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	got := map[netip.Prefix]bool{}
	for _, a := range have {
		p := toPrefix(a.IPNet)
		if containsPrefix(want, p) {
			got[p] = true
			continue
		}
		if prune && !p.Addr().IsLinkLocalUnicast() {
			if err := h.AddrDel(l, &a); err != nil {
				return fmt.Errorf("remove %v from %s: %w", p, l.Attrs().Name, err)
			}
		}
	}
	for _, p := range want {
		if got[p] {
			continue
		}
		a := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
		if p.Addr().Is4() {
			a.Flags = 0
		}
		if err := h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add %v to %s: %w", p, l.Attrs().Name, err)
		}
	}
	return nil
}

// ensureDefaultRoute routes everything of gw's family to gw on l. The
// gateway is link-local and the instance's addresses are host routes, so
// the IPv4 route must say "onlink"; IPv6 needs no such thing for fe80::/10.
func ensureDefaultRoute(h *netlink.Handle, l netlink.Link, gw netip.Addr) error {
	fam := netlink.FAMILY_V6
	dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	flags := 0
	if gw.Is4() {
		fam, dst, flags = netlink.FAMILY_V4, netip.PrefixFrom(netip.IPv4Unspecified(), 0), int(netlink.FLAG_ONLINK)
	}
	rs, err := h.RouteList(l, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	for _, r := range rs {
		if (r.Dst == nil || toPrefix(r.Dst).Bits() == 0) && r.Gw != nil {
			if g, _ := netip.AddrFromSlice(r.Gw); g.Unmap() == gw {
				return nil
			}
		}
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice(), Flags: flags}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %v: %w", gw, err)
	}
	return nil
}

// retryDump retries a netlink dump the kernel interrupted because the
// table changed meanwhile (netlink.ErrDumpInterrupted): the partial result
// must not be trusted.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 128
	if p.Addr().Is4() {
		bits = 32
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

func toPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
