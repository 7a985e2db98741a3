// Package dnstest is a small authoritative DNS server for tests: custom
// domain verification looks up CNAME and TXT records through it, and the
// ACME server (Pebble) resolves names and DNS-01 challenges through it.
// It speaks real DNS over UDP and TCP on loopback; records change while
// it runs.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/miekg/dns"
)

// Server answers from its records; a name it has no records for gets NXDOMAIN.
type Server struct {
	Addr string // host:port, UDP and TCP

	mu    sync.Mutex
	a     map[string][]net.IP
	cname map[string]string
	txt   map[string][]string
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{a: map[string][]net.IP{}, cname: map[string]string{}, txt: map[string][]string{}}
	pc, l, err := listenPair(loopbackUDP)
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: l, Handler: s}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return s
}

// listenPair binds UDP and TCP on one loopback port, because resolvers
// (Go's, Pebble's) take a single address for both. The kernel picks the
// UDP port; the same TCP port may already be taken by another process, so
// a clash means trying again with a fresh UDP port rather than failing.
func listenPair(listenUDP func() (net.PacketConn, error)) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 50 {
		pc, err := listenUDP()
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("listen tcp: %w", err)
		}
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no free UDP+TCP port pair: %w", lastErr)
}

func loopbackUDP() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }

func key(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// SetA makes name resolve to ips (A and AAAA by family).
func (s *Server) SetA(name string, ips ...net.IP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[key(name)] = ips
}

// SetCNAME points name at target. A name of "*.example.com" is a wildcard:
// it answers for every name below example.com that has no records of its
// own, as a zone's wildcard does (RFC 4592, simplified).
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cname[key(name)] = key(target)
}

// SetTXT replaces name's TXT records; no values removes them.
func (s *Server) SetTXT(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(values) == 0 {
		delete(s.txt, key(name))
		return
	}
	s.txt[key(name)] = values
}

// Delete removes every record of name.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.a, key(name))
	delete(s.cname, key(name))
	delete(s.txt, key(name))
}

// ServeDNS answers one query, following CNAMEs it knows.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	name := key(q.Name)
	found := false
	for range 8 { // CNAME chain, bounded
		hdr := func(rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 1}
		}
		src := s.source(name)
		if target, ok := s.cname[src]; ok {
			found = true
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: target})
			if q.Qtype == dns.TypeCNAME {
				break
			}
			name = target
			continue
		}
		if ips, ok := s.a[src]; ok {
			found = true
			for _, ip := range ips {
				switch {
				case q.Qtype == dns.TypeA && ip.To4() != nil:
					m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip.To4()})
				case q.Qtype == dns.TypeAAAA && ip.To4() == nil:
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
				}
			}
		}
		if vals, ok := s.txt[src]; ok {
			found = true
			if q.Qtype == dns.TypeTXT {
				// One record per value, as a zone with several TXT records
				// answers (ACME's d and *.d challenges share one name).
				for _, v := range vals {
					m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: chunks(v)})
				}
			}
		}
		break
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// source is the name whose records answer for name: name itself, or the
// closest wildcard above it when name has none. Callers hold s.mu.
func (s *Server) source(name string) string {
	has := func(n string) bool {
		_, a := s.a[n]
		_, c := s.cname[n]
		_, t := s.txt[n]
		return a || c || t
	}
	if has(name) {
		return name
	}
	for rest := name; ; {
		_, parent, ok := strings.Cut(rest, ".")
		if !ok || parent == "" {
			return name
		}
		if w := "*." + parent; has(w) {
			return w
		}
		rest = parent
	}
}

// chunks splits a TXT value into the 255-byte strings DNS carries.
func chunks(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}
