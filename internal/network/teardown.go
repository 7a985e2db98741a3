package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Teardown removes the instance's network: its set elements, its veth
// (which takes its routes with it) and its namespace. Missing pieces are
// not an error. The instance's processes must be gone first, or the
// namespace lives on, unnamed, until they exit.
func (m *Manager) Teardown(ctx context.Context, id uuid.UUID) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	hostIf := m.hostIf(id)
	defer m.instMu.lock(hostIf)()
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
		err := m.commitElements(ctx, nil, []Attachment{att})
		if err != nil && !errors.Is(err, errNoTable) {
			errs = append(errs, err)
			break
		}
		if err != nil {
			m.elMu.Lock()
			delete(m.written, hostIf)
			m.elMu.Unlock()
		}
		if err := m.node.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
		}
	}
	if err := removeNetns(m.NetnsPath(id)); err != nil {
		errs = append(errs, err)
	}
	if err := m.removeResolvConf(id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: tear down instance %s: %w", id, err)
	}
	return nil
}

// Reset removes everything this package made on the node: the nftables
// table, every veth and every namespace with its prefixes. Forwarding stays
// on (something else may rely on it). For decommissioning a node and for
// tests; running instances lose their network.
func (m *Manager) Reset(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.waitRemembered()
	var errs []error
	t := m.cfg.Table
	m.elMu.Lock()
	clear(m.written)
	m.listed = ""
	m.elMu.Unlock()
	if err := m.runNft(ctx, "table inet "+t+" {}\ndelete table inet "+t+"\n"); err != nil {
		errs = append(errs, err)
	}
	if m.cfg.Machine != nil {
		errs = append(errs, m.resetMachine(ctx))
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
	if m.cfg.ResolvConfDir != "" {
		ents, err := os.ReadDir(m.cfg.ResolvConfDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), m.cfg.NetnsPrefix) {
				errs = append(errs, os.RemoveAll(filepath.Join(m.cfg.ResolvConfDir, e.Name())))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: reset: %w", err)
	}
	return nil
}
