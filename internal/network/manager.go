package network

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	// ErrConflict means another instance already holds the link name that
	// this instance's id maps to (their ids share the last 8 hex digits).
	ErrConflict = errors.New("network: link name taken by another instance")
	// ErrAddrInUse means the instance's IPv6 address is already routed to
	// something else on this node; the caller picks ipam.NextInstanceAddr.
	ErrAddrInUse = errors.New("network: address already in use on this node")
)

// Instance is what Setup needs to know about an instance.
type Instance struct {
	ID uuid.UUID
	// Addr is the instance's IPv6 address, in the node's /64 of the cluster
	// (see ipam.InstanceAddr), recorded in the database.
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
	// ResolvConf is the file the runtime mounts at the instance's
	// /etc/resolv.conf; empty when there is none. Only Setup fills it.
	ResolvConf string
}

// Complete says whether both the namespace and the veth exist. List also
// returns incomplete attachments (what a crash mid-Setup leaves), which
// Setup repairs and Teardown removes.
func (a Attachment) Complete() bool { return a.Netns != "" && a.HostIf != "" }

// Manager sets up and tears down instances' networks on one node. Its
// methods are safe for concurrent use: Setups and Teardowns of different
// instances run side by side, while Apply, Check and Reset, which rewrite
// the table from what exists, run alone (see concurrency.go).
type Manager struct {
	cfg     Config
	log     *slog.Logger
	nftPath string

	mu sync.RWMutex // held for writing by Apply, Check and Reset
	// instMu is a lock per veth name; addrMu guards claimed, the
	// addresses of Setups under way (concurrency.go).
	instMu  keyedMutex
	addrMu  sync.Mutex
	claimed map[netip.Addr]uuid.UUID
	// elMu guards written, pendingEls and flushing: the set element
	// changes waiting for the next nft, and whether one is running.
	elMu       sync.Mutex
	pendingEls []*elementChange
	flushing   bool
	// elGen counts element batches written; remembering says that
	// rememberLoop is listing the table after them, remembered is closed
	// when it is done.
	elGen       uint64
	remembering bool
	remembered  chan struct{}

	node   *netlink.Handle
	nodeFd int // the node's namespace when cfg.NodeNetns is set, else -1
	// machine and machineFd are the same for the machine a simulated node
	// runs on (cfg.Machine); machine is nil without one.
	machine   *netlink.Handle
	machineFd int
	// written records the set elements this manager has written, by host
	// veth, so that Setup on an unchanged attachment skips running nft
	// (a fork and about 20 ms). If the table is changed behind its back,
	// the next Apply rewrites it from the kernel's state.
	written map[string]Attachment
	// listed is a digest of the table as nft listed it after this
	// manager's last change, "" when unknown; Check compares against it.
	// Guarded by elMu: written by rememberLoop, or with mu held for
	// writing after waitRemembered.
	listed string
	// nftRuns counts the nft processes this manager ran, for tests and
	// benchmarks.
	nftRuns atomic.Int64
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
	m := &Manager{cfg: cfg, log: cfg.Logger, nftPath: nftPath, nodeFd: -1, machineFd: -1, written: map[string]Attachment{}}
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
	if u := cfg.Machine; u != nil {
		if u.Netns != "" {
			if m.machineFd, err = openNetns(u.Netns); err != nil {
				m.Close()
				return nil, fmt.Errorf("network: machine namespace: %w", err)
			}
			m.machine, err = handleAt(m.machineFd)
		} else {
			m.machine, err = netlink.NewHandle()
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("network: netlink on the machine: %w", err)
		}
	}
	return m, nil
}

// Close releases the manager's handles. Instances' networks stay.
func (m *Manager) Close() error {
	// A listing of the table for Check may still run (rememberLoop), in
	// the namespace whose handles are closed here.
	m.waitRemembered()
	if m.node != nil {
		m.node.Close()
	}
	if m.nodeFd >= 0 {
		unix.Close(m.nodeFd)
		m.nodeFd = -1
	}
	if m.machine != nil {
		m.machine.Close()
	}
	if m.machineFd >= 0 {
		unix.Close(m.machineFd)
		m.machineFd = -1
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
// idempotent; the agent calls it at start, and Check on every convergence
// pass.
func (m *Manager) Apply(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.waitRemembered()
	return m.apply(ctx)
}

// Check makes the firewall fail closed: it lists the nftables table and,
// if it is not exactly as this manager last left it (removed by a firewall
// reload running `nft flush ruleset`, a chain flushed, a rule or element
// deleted by hand), applies the whole policy again and reports that it did.
// Between the damage and the next Check forwarding is on without rules and
// instances are not isolated, so the agent calls it at the start of every
// convergence pass. One nft process when nothing is wrong.
//
// If the table cannot be checked or applied, Check turns forwarding off
// (Apply turns it on again): instances then reach neither each other nor
// the internet, rather than everything. Not when ctx ended: an agent that
// is stopping leaves its instances' network as it is.
func (m *Manager) Check(ctx context.Context) (repaired bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.waitRemembered()
	repaired, err = m.check(ctx)
	if err != nil && ctx.Err() == nil {
		if ferr := m.inNode(m.disableForwarding); ferr != nil {
			return false, errors.Join(err, fmt.Errorf("network: turn forwarding off: %w", ferr))
		}
		m.log.ErrorContext(ctx, "nftables policy cannot be applied: forwarding turned off until it can", "err", err)
	}
	return repaired, err
}

func (m *Manager) check(ctx context.Context) (repaired bool, err error) {
	sum, err := m.listTable(ctx)
	m.elMu.Lock()
	listed := m.listed
	m.elMu.Unlock()
	if err == nil && sum != "" && sum == listed {
		return false, nil
	}
	if err != nil && !errors.Is(err, errNoTable) {
		return false, fmt.Errorf("network: check rules: %w", err)
	}
	m.log.WarnContext(ctx, "nftables table missing or changed behind the agent's back; applying it again", "table", m.cfg.Table)
	if err := m.apply(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// remember records the table as it now is, for Check. Called after every
// change this manager makes with m.mu held for writing (element batches
// have rememberLoop); if listing fails, the next Check
// applies the table again, which is harmless.
func (m *Manager) remember(ctx context.Context) {
	sum, err := m.listTable(ctx)
	if err != nil {
		m.log.WarnContext(ctx, "list nftables table", "err", err)
	}
	m.elMu.Lock()
	m.listed = sum
	m.elMu.Unlock()
}

// listTable returns a digest of the table's rules, sets and elements as nft
// lists them (without counters), errNoTable if it does not exist. The
// connection-count set is left out: the kernel fills it as connections come
// and go.
func (m *Manager) listTable(ctx context.Context) (string, error) {
	var out []byte
	m.nftRuns.Add(1)
	err := m.inNode(func() error {
		cmd := exec.CommandContext(ctx, m.nftPath, "-s", "list", "table", "inet", m.cfg.Table)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		var err error
		if out, err = cmd.Output(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "No such file or directory") {
				return fmt.Errorf("nft: %w: %s", errNoTable, msg)
			}
			return fmt.Errorf("nft: %w: %s", err, msg)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	text := string(out)
	if before, rest, ok := strings.Cut(text, "\tset inst_conns {\n"); ok {
		if _, after, ok := strings.Cut(rest, "\n\t}\n"); ok {
			text = before + after
		}
	}
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:]), nil
}

func (m *Manager) apply(ctx context.Context) error {
	// The machine uplink first: it makes the interface that the node's
	// forwarding settings and rules name.
	if m.cfg.Machine != nil {
		if err := m.applyMachine(ctx); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	if err := m.inNode(m.enableForwarding); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	atts, err := m.list()
	if err != nil {
		return err
	}
	m.elMu.Lock()
	clear(m.written)
	m.elMu.Unlock()
	if err := m.runNft(ctx, renderRules(m.cfg, atts)); err != nil {
		return fmt.Errorf("network: apply rules: %w", err)
	}
	m.elMu.Lock()
	for _, a := range atts {
		if a.HostIf != "" {
			m.written[a.HostIf] = a
		}
	}
	m.elMu.Unlock()
	m.remember(ctx)
	return nil
}

// disableForwarding is enableForwarding undone, for failing closed.
func (m *Manager) disableForwarding() error {
	if _, err := sysctl("net/ipv6/conf/all/forwarding", "0"); err != nil {
		return err
	}
	if m.cfg.IPv4.IsValid() {
		if _, err := sysctl("net/ipv4/ip_forward", "0"); err != nil {
			return err
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
