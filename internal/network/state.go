package network

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
)

// List returns every instance network this package finds on the node,
// complete or not, read from the kernel alone.
func (m *Manager) List() ([]Attachment, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	atts, err := m.list()
	if err != nil || m.cfg.ResolvConfDir == "" {
		return atts, err
	}
	for i := range atts {
		if p := m.resolvConfPath(atts[i].ID); fileExists(p) {
			atts[i].ResolvConf = p
		}
	}
	return atts, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (m *Manager) list() ([]Attachment, error) {
	var c collector
	if err := m.collectLinks(&c); err != nil {
		return nil, err
	}
	if err := m.collectNetns(&c); err != nil {
		return nil, err
	}
	out := make([]Attachment, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, *c.byID[id])
	}
	return out, nil
}

// collector gathers the pieces of attachments by instance id, in the order
// they are first seen.
type collector struct {
	byID  map[uuid.UUID]*Attachment
	order []uuid.UUID
}

func (c *collector) get(id uuid.UUID) *Attachment {
	if a, ok := c.byID[id]; ok {
		return a
	}
	if c.byID == nil {
		c.byID = map[uuid.UUID]*Attachment{}
	}
	a := &Attachment{ID: id}
	c.byID[id] = a
	c.order = append(c.order, id)
	return a
}

// collectLinks records the host veths (their instance and port, read from
// the alias) and the addresses routed to them.
func (m *Manager) collectLinks(c *collector) error {
	links, err := m.ownLinks()
	if err != nil {
		return err
	}
	byIndex := map[int]*Attachment{}
	for _, l := range links {
		a, ok := m.attachmentOf(l)
		if !ok {
			// A Setup that stopped between creating the veth and naming
			// it; Setup or Teardown of its instance (found by its
			// namespace) finishes the job. One under way is no news.
			if !m.instMu.held(l.Attrs().Name) {
				m.log.Warn("veth with Zeitwork's prefix but no instance alias", "host_if", l.Attrs().Name)
			}
			continue
		}
		p := c.get(a.ID)
		p.HostIf, p.Port = a.HostIf, a.Port
		byIndex[l.Attrs().Index] = p
	}
	routes, err := m.routesByDst()
	if err != nil {
		return err
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
	return nil
}

// collectNetns records the instance namespaces pinned in NetnsDir.
func (m *Manager) collectNetns(c *collector) error {
	ents, err := os.ReadDir(m.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
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
		c.get(id).Netns = filepath.Join(m.cfg.NetnsDir, e.Name())
	}
	return nil
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
// the IPv4 range) of the given families (both if none) to the link each
// leads to. Each family is a dump of all the node's routes of it.
func (m *Manager) routesByDst(families ...int) (map[netip.Prefix]int, error) {
	if len(families) == 0 {
		families = []int{netlink.FAMILY_V6, netlink.FAMILY_V4}
	}
	out := map[netip.Prefix]int{}
	for _, fam := range families {
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
