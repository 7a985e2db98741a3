package network

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"golang.org/x/sys/unix"
)

// TestCheckRepairsThePolicy: whatever removes or changes the table behind
// the manager's back (a firewall reload's `nft flush ruleset`, a chain
// flushed, an element deleted), Check notices and puts the whole policy
// back, after which A cannot reach B again; on an intact table it changes
// nothing.
func TestCheckRepairsThePolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	a := l.instance(ctx, m)
	b := l.instance(ctx, m)
	toB := hostPort(b.Addr, instancePort)
	isolated := func(t *testing.T) {
		t.Helper()
		if line, err := dial(a.fd, netip.Addr{}, toB, dialTimeout); err == nil {
			t.Fatalf("A reached B (%q)", line)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("A to B: %v, want connection refused", err)
		}
		// And the node still reaches both: the elements came back too.
		for _, in := range []testInstance{a, b} {
			if _, err := dial(l.node.fd, netip.Addr{}, hostPort(in.Addr, instancePort), dialTimeout); err != nil {
				t.Fatalf("node to %s: %v", in.HostIf, err)
			}
		}
	}
	intact := l.nftList()

	if repaired, err := m.Check(ctx); err != nil || repaired {
		t.Fatalf("Check on an intact table: repaired %v, %v", repaired, err)
	}
	if l.nftList() != intact {
		t.Fatal("Check changed an intact table")
	}
	// What every convergence pass pays for it (reported, not asserted).
	start := time.Now()
	for range 20 {
		if _, err := m.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Check on an intact table: %v each", time.Since(start)/20)

	for _, c := range []struct{ name, damage string }{
		{"table deleted", "delete table inet " + l.cfg.Table},
		{"egress chain flushed", "flush chain inet " + l.cfg.Table + " instance_egress"},
		{"forward chain flushed", "flush chain inet " + l.cfg.Table + " forward"},
		{"source element deleted", `delete element inet ` + l.cfg.Table + ` inst_addr6 { "` + b.HostIf + `" . ` + b.Addr.String() + ` }`},
	} {
		t.Run(c.name, func(t *testing.T) {
			l.nft(c.damage + "\n")
			if c.name == "table deleted" {
				// The hole Check closes: without the table A reaches B.
				if _, err := dial(a.fd, netip.Addr{}, toB, dialTimeout); err != nil {
					t.Fatalf("without the table A still cannot reach B (%v): the test proves nothing", err)
				}
			}
			repaired, err := m.Check(ctx)
			if err != nil || !repaired {
				t.Fatalf("Check after %s: repaired %v, %v", c.name, repaired, err)
			}
			if got := l.nftList(); got != intact {
				t.Errorf("after Check the table is\n%s\nwant\n%s", got, intact)
			}
			isolated(t)
		})
	}
}

// TestCheckFailsClosed: when the policy is gone and cannot be applied
// again (here: nft fails), Check turns forwarding off, so A still cannot
// reach B, nor the internet; once nft works, one Check restores both the
// policy and egress.
func TestCheckFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	a := l.instance(ctx, m)
	b := l.instance(ctx, m)
	serve(t, l.inet.fd, "internet", ":"+strconv.Itoa(inetPort))
	toB, toInet := hostPort(b.Addr, instancePort), hostPort(l.inet6, inetPort)
	if _, err := dial(a.fd, netip.Addr{}, toInet, dialTimeout); err != nil {
		t.Fatalf("A to the internet with the policy: %v", err)
	}

	l.nft("delete table inet " + l.cfg.Table + "\n")
	nft := m.nftPath
	m.nftPath = "/bin/false"
	if _, err := m.Check(ctx); err == nil {
		t.Fatal("Check with a broken nft reported no error")
	}
	before := b.srv.count()
	if line, err := dial(a.fd, netip.Addr{}, toB, dialTimeout); err == nil || b.srv.count() != before {
		t.Fatalf("with no policy and nft broken, A reached B (%q, %v)", line, err)
	}
	if _, err := dial(a.fd, netip.Addr{}, toInet, dialTimeout); err == nil {
		t.Fatal("with no policy and nft broken, A reached the internet")
	}

	m.nftPath = nft
	if repaired, err := m.Check(ctx); err != nil || !repaired {
		t.Fatalf("Check with nft back: repaired %v, %v", repaired, err)
	}
	if _, err := dial(a.fd, netip.Addr{}, toB, dialTimeout); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("A to B with the policy back: %v, want connection refused", err)
	}
	if line, err := dial(a.fd, netip.Addr{}, toInet, dialTimeout); err != nil || line != "internet "+l.node6.String() {
		t.Fatalf("A to the internet with the policy back: %q, %v", line, err)
	}
}

// TestConnectionLimitPerInstance: the node may hold at most
// MaxConnsPerInstance connections to one instance at once; the next is
// refused with a reset, a neighbour is unaffected, and closing one makes
// room again.
func TestConnectionLimitPerInstance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t)
	const limit = 3
	l.cfg.MaxConnsPerInstance = limit
	m := l.manager()
	t.Cleanup(func() { m.Reset(ctx) })
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	a := l.holdingInstance(ctx, m)
	b := l.holdingInstance(ctx, m)

	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := range limit {
		c, err := l.dialNode(hostPort(a.Addr, instancePort))
		if err != nil {
			t.Fatalf("connection %d of %d to A: %v", i+1, limit, err)
		}
		held = append(held, c)
	}
	if c, err := l.dialNode(hostPort(a.Addr, instancePort)); err == nil {
		c.Close()
		t.Fatalf("connection %d to A got through; the limit is %d", limit+1, limit)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connection over the limit: %v, want connection refused", err)
	}
	// The kernel fills the count set as connections open: that is not
	// damage for Check to repair (a re-apply would forget the counts).
	if repaired, err := m.Check(ctx); err != nil || repaired {
		t.Fatalf("Check with connections counted: repaired %v, %v", repaired, err)
	}
	// The limit is A's, not the node's.
	c, err := l.dialNode(hostPort(b.Addr, instancePort))
	if err != nil {
		t.Fatalf("B while A is at its limit: %v", err)
	}
	c.Close()

	// A closed connection no longer counts (once both ends closed it).
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := l.dialNode(hostPort(a.Addr, instancePort))
		if err == nil {
			held = append(held, c)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A after one of its connections closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// holdingInstance sets up an instance whose port accepts connections and
// keeps each open until the peer closes it.
func (l *lab) holdingInstance(ctx context.Context, m *Manager) Attachment {
	l.t.Helper()
	i := id.New()
	att, err := m.Setup(ctx, Instance{ID: i, Addr: ipam.InstanceAddr(ipam.NodePrefix(l.cfg.Cluster, 1), i), Port: instancePort})
	if err != nil {
		l.t.Fatal(err)
	}
	fd, err := openNetns(att.Netns)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { unix.Close(fd) })
	var ln net.Listener
	if err := inNetns(fd, func() (err error) {
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(instancePort))
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return att
}

// dialNode opens a connection from the node, as the node-proxy does, and
// returns it open.
func (l *lab) dialNode(target string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(l.node.fd, func() (err error) {
		d := net.Dialer{Timeout: dialTimeout}
		c, err = d.Dial("tcp", target)
		return err
	})
	return c, err
}
