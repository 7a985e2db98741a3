package network

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/uuid"
)

// How concurrent Setups and Teardowns stay apart without one lock across
// the node (50 instances set up at once would otherwise queue behind each
// other's namespace, veth and nft fork, 15–50 ms each):
//
//   - Manager.mu is a read-write lock. Setup and Teardown hold it for
//     reading; Apply, Check and Reset, which rewrite the table from what
//     exists, hold it for writing, so they never see half an instance.
//   - Each instance's veth name (its short id) has its own lock: two calls
//     for one instance, or for two instances whose names collide, take
//     turns.
//   - Addresses are claimed under addrMu, which covers only reading the
//     routes and noting the claim: an address claimed by a Setup still
//     under way is as taken as one already routed.
//   - Set elements are written in batches: every Setup and Teardown that
//     arrives while one nft is running joins the next, so 50 of them cost
//     a few nft processes rather than 100.

// keyedMutex is a lock per key, kept only while someone holds or waits
// for it.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e, ok := k.locks[key]
	if !ok {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// held says whether someone holds or waits for key's lock.
func (k *keyedMutex) held(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.locks[key]
	return ok
}

// claimAddr runs pick under addrMu, with a fresh view of the node's
// instance routes of the address family (netlink.FAMILY_V6 or _V4) and of
// the addresses other Setups under way have claimed (taken), and claims
// for id the address pick returns, until release: once its route exists
// (or the Setup failed).
func (m *Manager) claimAddr(id uuid.UUID, family int, pick func(routes map[netip.Prefix]int, taken func(netip.Addr) bool) (netip.Addr, error)) (netip.Addr, func(), error) {
	m.addrMu.Lock()
	defer m.addrMu.Unlock()
	routes, err := m.routesByDst(family)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	a, err := pick(routes, func(a netip.Addr) bool {
		owner, ok := m.claimed[a]
		return ok && owner != id
	})
	if err != nil {
		return netip.Addr{}, nil, err
	}
	if m.claimed == nil {
		m.claimed = map[netip.Addr]uuid.UUID{}
	}
	m.claimed[a] = id
	return a, func() {
		m.addrMu.Lock()
		defer m.addrMu.Unlock()
		if m.claimed[a] == id {
			delete(m.claimed, a)
		}
	}, nil
}

// elementChange is one caller's set element change, written in a batch.
type elementChange struct {
	add, del []Attachment
	done     chan struct{}
	err      error
}

// commitElements writes one instance's set element changes (add, and del
// removed first), batched with any other instances' that arrive meanwhile;
// m.mu is held for reading. The first caller to find no batch running
// writes batches until none is left, then lists the table once for Check.
// A batch that fails is written again one change at a time, so that one
// instance's bad element fails only that instance.
func (m *Manager) commitElements(ctx context.Context, add, del []Attachment) error {
	ch := &elementChange{add: add, del: del, done: make(chan struct{})}
	m.elMu.Lock()
	m.pendingEls = append(m.pendingEls, ch)
	lead := !m.flushing
	if lead {
		m.flushing = true
	}
	m.elMu.Unlock()
	if lead {
		// Not the caller's context: the batch holds others' changes too.
		m.flushElements(context.WithoutCancel(ctx))
	}
	<-ch.done
	return ch.err
}

// flushElements writes pending batches until there are none, then has
// the table listed for Check in the background (rememberLoop): the nft
// list is a second process, and the instances need not wait for it.
func (m *Manager) flushElements(ctx context.Context) {
	for {
		m.elMu.Lock()
		batch := m.pendingEls
		m.pendingEls = nil
		if len(batch) == 0 {
			m.flushing = false
			m.elMu.Unlock()
			return
		}
		m.elMu.Unlock()
		var add, del []Attachment
		for _, ch := range batch {
			add, del = append(add, ch.add...), append(del, ch.del...)
		}
		// Every deletion before every addition: an element two instances
		// share (an address moving from one to the other) survives.
		err := m.runNft(ctx, elementScript(m.cfg.Table, add, del))
		for _, ch := range batch {
			if err != nil && len(batch) > 1 {
				ch.err = m.runNft(ctx, elementScript(m.cfg.Table, ch.add, ch.del))
			} else {
				ch.err = err
			}
		}
		m.elMu.Lock()
		m.elGen++
		if !m.remembering {
			m.remembering, m.remembered = true, make(chan struct{})
			go m.rememberLoop(ctx)
		}
		for _, ch := range batch {
			if ch.err != nil {
				continue
			}
			for _, d := range ch.del {
				delete(m.written, d.HostIf)
			}
			for _, a := range ch.add {
				m.written[a.HostIf] = a
			}
		}
		m.elMu.Unlock()
		for _, ch := range batch {
			close(ch.done)
		}
	}
}

// rememberLoop lists the table for Check until it has listed it after the
// last batch written. Apply, Check and Reset wait for it (waitRemembered)
// before they look at or change the table.
func (m *Manager) rememberLoop(ctx context.Context) {
	for {
		m.elMu.Lock()
		gen := m.elGen
		m.elMu.Unlock()
		sum, err := m.listTable(ctx)
		if err != nil {
			m.log.WarnContext(ctx, "list nftables table", "err", err)
		}
		m.elMu.Lock()
		m.listed = sum
		if m.elGen == gen {
			m.remembering = false
			close(m.remembered)
			m.elMu.Unlock()
			return
		}
		m.elMu.Unlock()
	}
}

// waitRemembered waits until the table's digest is that of the last
// element batch written; m.mu is held for writing, so no batch comes.
func (m *Manager) waitRemembered() {
	m.elMu.Lock()
	busy, done := m.remembering, m.remembered
	m.elMu.Unlock()
	if busy {
		<-done
	}
}

// wroteAlready says whether this manager's last write of att.HostIf's
// elements was att.
func (m *Manager) wroteAlready(att Attachment) bool {
	m.elMu.Lock()
	defer m.elMu.Unlock()
	w, ok := m.written[att.HostIf]
	return ok && w == att
}

func errAddrInUse(a netip.Addr) error { return fmt.Errorf("%w: %v", ErrAddrInUse, a) }
