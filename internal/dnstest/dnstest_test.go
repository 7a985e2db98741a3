package dnstest

import (
	"context"
	"net"
	"testing"
)

func TestServerAnswersRecordsAndFollowsCNAME(t *testing.T) {
	s := Start(t)
	s.SetA("edge.zeitwork.test", net.ParseIP("127.0.0.1"))
	s.SetCNAME("App.Customer.test", "edge.zeitwork.test")
	s.SetTXT("_zeitwork.app.customer.test", "token-1")
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, s.Addr)
	}}
	ctx := context.Background()
	cname, err := r.LookupCNAME(ctx, "app.customer.test")
	if err != nil || cname != "edge.zeitwork.test." {
		t.Fatalf("CNAME = %q, %v", cname, err)
	}
	ips, err := r.LookupHost(ctx, "app.customer.test")
	if err != nil || len(ips) != 1 || ips[0] != "127.0.0.1" {
		t.Fatalf("hosts = %v, %v", ips, err)
	}
	txt, err := r.LookupTXT(ctx, "_zeitwork.app.customer.test")
	if err != nil || len(txt) != 1 || txt[0] != "token-1" {
		t.Fatalf("TXT = %v, %v", txt, err)
	}
	s.SetTXT("_zeitwork.app.customer.test")
	if _, err := r.LookupTXT(ctx, "_zeitwork.app.customer.test"); err == nil {
		t.Fatal("removed TXT record still answers")
	}
	if _, err := r.LookupHost(ctx, "unknown.customer.test"); err == nil {
		t.Fatal("unknown name resolved")
	}
}

// A UDP port whose TCP twin belongs to someone else is given back and
// another tried, instead of failing the test with "address in use".
func TestListenPairRetriesWhenTCPPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	pc, l, err := listenPair(func() (net.PacketConn, error) {
		calls++
		if calls == 1 {
			// The UDP side of the taken TCP port is free, as after a
			// kernel-chosen UDP port that another process holds on TCP.
			return net.ListenPacket("udp", taken.Addr().String())
		}
		return loopbackUDP()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer l.Close()
	if calls != 2 {
		t.Fatalf("UDP listens = %d, want 2", calls)
	}
	if pc.LocalAddr().String() != l.Addr().String() {
		t.Fatalf("UDP %s and TCP %s differ", pc.LocalAddr(), l.Addr())
	}
	if pc.LocalAddr().String() == taken.Addr().String() {
		t.Fatal("pair reuses the taken port")
	}
}
