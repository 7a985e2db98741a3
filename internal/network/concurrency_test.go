package network

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
)

// TestConcurrentSetups sets up many instances at once, in pairs whose ids
// give the same IPv4 address, while the firewall is checked and others are
// torn down: each instance gets an address of its own, routed to its own
// veth, and the table holds exactly every live instance's elements (Check
// finds nothing to repair). Setups run side by side, so this is what the
// address claims and the element batches must keep true.
func TestConcurrentSetups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	// A small range, so that derived addresses collide.
	l.cfg.IPv4 = netip.MustParsePrefix("198.18.7.0/24")
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	node := ipam.NodePrefix(l.cfg.Cluster, 1)
	mk := func(i uuid.UUID) Instance {
		return Instance{ID: i, Addr: ipam.InstanceAddr(node, i), Port: instancePort}
	}
	// 12 pairs of instances whose derived IPv4 addresses are the same.
	var insts []Instance
	byAddr := map[netip.Addr]uuid.UUID{}
	for len(insts) < 24 {
		i := id.New()
		a := ipam.InstanceAddr(l.cfg.IPv4, i)
		if other, ok := byAddr[a]; ok && other != uuid.Nil {
			insts = append(insts, mk(other), mk(i))
			byAddr[a] = uuid.Nil // one pair per address
		} else if !ok {
			byAddr[a] = i
		}
	}
	// Some already set up, to be torn down while the others are set up.
	var gone []Instance
	for range 4 {
		in := mk(id.New())
		if _, err := m.Setup(ctx, in); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, in)
	}

	runs := m.nftRuns.Load()
	start := time.Now()
	atts := make([]Attachment, len(insts))
	errs := make([]error, len(insts)+len(gone))
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Go(func() { atts[i], errs[i] = m.Setup(ctx, in) })
	}
	for i, in := range gone {
		wg.Go(func() { errs[len(insts)+i] = m.Teardown(ctx, in.ID) })
	}
	wg.Go(func() {
		if _, err := m.Check(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	t.Logf("%d Setups and %d Teardowns at once: %v, %d nft processes", len(insts), len(gone), time.Since(start).Round(time.Millisecond), m.nftRuns.Load()-runs)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}

	seen := map[netip.Addr]uuid.UUID{}
	for _, a := range atts {
		if !a.Complete() || !a.Addr4.IsValid() {
			t.Fatalf("attachment %+v is not complete", a)
		}
		if other, ok := seen[a.Addr4]; ok {
			t.Fatalf("instances %s and %s both got %v", other, a.ID, a.Addr4)
		}
		seen[a.Addr4] = a.ID
	}
	routes, err := m.routesByDst()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range atts {
		host, err := l.node.h.LinkByName(a.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []netip.Prefix{netip.PrefixFrom(a.Addr, 128), netip.PrefixFrom(a.Addr4, 32)} {
			if routes[p] != host.Attrs().Index {
				t.Errorf("%v of %s is routed to link %d, not its veth %d", p, a.ID, routes[p], host.Attrs().Index)
			}
		}
	}
	if repaired, err := m.Check(ctx); err != nil || repaired {
		t.Fatalf("Check after concurrent setups: repaired %v, %v; the table is not as the manager wrote it", repaired, err)
	}
	table := l.nftList()
	for _, a := range atts {
		for _, s := range []string{a.Addr.String(), a.Addr4.String()} {
			if !strings.Contains(table, s) {
				t.Errorf("table has no element for %s (%s)", a.ID, s)
			}
		}
	}
	for _, in := range gone {
		if strings.Contains(table, in.Addr.String()) {
			t.Errorf("table still has %v of torn-down %s", in.Addr, in.ID)
		}
	}
	// A manager starting afresh renders the same table from the kernel's
	// state: nothing was written that the instances' links do not say.
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if after := l.nftList(); tokens(after) != tokens(table) {
		t.Errorf("table after Apply differs from the one the concurrent setups wrote:\n%s\nvs\n%s", table, after)
	}
}

// tokens is an nft listing's words and elements, sorted: the same for two
// listings of the same table whatever order the elements were added in.
func tokens(listing string) string {
	f := strings.FieldsFunc(listing, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	slices.Sort(f)
	return strings.Join(f, " ")
}
