package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// dnsProvider is what DNS-01 needs of a DNS provider's API: the zones it
// has, and adding and removing a TXT record in one.
type dnsProvider interface {
	libdns.ZoneLister
	libdns.RecordAppender
	libdns.RecordDeleter
}

// dns01Solver proves control of a name with a TXT record made through a
// libdns provider.
//
// certmagic.DNS01Solver finds the zone of a name by looking for its SOA
// record in DNS; this one asks the provider's API which zone the name lies
// in, which is what the API call needs anyway and works whatever the
// resolvers see.
//
// Challenges that share a record name (d and *.d both use
// _acme-challenge.d, and are separate certificates obtained at the same
// time) are solved one after the other, so that the name holds one TXT
// record at a time. Let's Encrypt accepts several, but not every DNS server
// answers several correctly: internal/dnstest answers them as one record of
// joined strings, which Pebble cannot match. It costs one validation
// round-trip per pair of certificates, at issuance and renewal.
type dns01Solver struct {
	dns dnsProvider
	// resolvers are asked whether the record is visible yet (host:port);
	// without them, the zone's authoritative name servers are.
	resolvers []string
	log       *slog.Logger
	timeout   time.Duration // for the record to become visible
	interval  time.Duration // between looks

	mu      sync.Mutex
	busy    map[string]chan struct{} // record names a challenge is using; closed when it is done
	pending map[string]*dnsChallenge // by challengeKey
}

type dnsChallenge struct {
	name string        // the TXT record's name, fully qualified without the dot
	slot chan struct{} // busy[name] while this challenge holds it
	zone string
	rec  libdns.Record // nil until made
}

var _ acmez.Waiter = (*dns01Solver)(nil)

func newDNS01Solver(p dnsProvider, resolvers []string, log *slog.Logger) *dns01Solver {
	return &dns01Solver{
		dns: p, resolvers: resolvers, log: log,
		timeout: 2 * time.Minute, interval: time.Second,
		busy: map[string]chan struct{}{}, pending: map[string]*dnsChallenge{},
	}
}

func challengeKey(c acme.Challenge) string {
	return c.DNS01TXTRecordName() + " " + c.DNS01KeyAuthorization()
}

// Present does nothing: the record is made in Wait, once its name is free
// (see dns01Solver), because Present must return quickly.
func (s *dns01Solver) Present(context.Context, acme.Challenge) error { return nil }

// Wait makes the TXT record and returns once it is visible.
func (s *dns01Solver) Wait(ctx context.Context, chal acme.Challenge) error {
	c := &dnsChallenge{name: strings.TrimSuffix(chal.DNS01TXTRecordName(), ".")}
	value := chal.DNS01KeyAuthorization()
	s.mu.Lock()
	s.pending[challengeKey(chal)] = c
	s.mu.Unlock()
	if err := s.claim(ctx, c); err != nil {
		return fmt.Errorf("dns-01 %s: waiting for another challenge of that name: %w", c.name, err)
	}
	zones, err := s.dns.ListZones(ctx)
	if err != nil {
		return fmt.Errorf("dns-01 %s: list zones: %w", c.name, err)
	}
	if c.zone, err = zoneOf(c.name, zones); err != nil {
		return fmt.Errorf("dns-01: %w", err)
	}
	rec := libdns.TXT{Name: libdns.RelativeName(c.name, c.zone), Text: value, TTL: time.Minute}
	if _, err := s.dns.AppendRecords(ctx, c.zone, []libdns.Record{rec}); err != nil {
		return fmt.Errorf("dns-01 %s: add TXT record: %w", c.name, err)
	}
	c.rec = rec
	return s.awaitVisible(ctx, c.zone, c.name, value)
}

// CleanUp removes the record Wait made, if it made one.
func (s *dns01Solver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	s.mu.Lock()
	c := s.pending[challengeKey(chal)]
	delete(s.pending, challengeKey(chal))
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	defer s.release(c)
	if c.rec == nil {
		return nil
	}
	// Cleaning up often follows a cancelled context; it must happen anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.dns.DeleteRecords(ctx, c.zone, []libdns.Record{c.rec}); err != nil {
		return fmt.Errorf("dns-01 %s: delete TXT record: %w", c.name, err)
	}
	return nil
}

// claim waits until no other challenge uses c's record name, and takes it.
func (s *dns01Solver) claim(ctx context.Context, c *dnsChallenge) error {
	for {
		s.mu.Lock()
		other, ok := s.busy[c.name]
		if !ok {
			c.slot = make(chan struct{})
			s.busy[c.name] = c.slot
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-other:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *dns01Solver) release(c *dnsChallenge) {
	if c.slot == nil {
		return
	}
	s.mu.Lock()
	if s.busy[c.name] == c.slot {
		delete(s.busy, c.name)
	}
	s.mu.Unlock()
	close(c.slot)
}

// awaitVisible returns once every resolver (or every name server of zone)
// answers value among the TXT records of name, so that the CA, which asks
// them next, finds it.
func (s *dns01Solver) awaitVisible(ctx context.Context, zone, name, value string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	for {
		err := s.visible(ctx, zone, name, value)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dns-01 %s: TXT record not visible: %w", name, err)
		case <-time.After(s.interval):
		}
	}
}

func (s *dns01Solver) visible(ctx context.Context, zone, name, value string) error {
	servers, recursive := s.resolvers, true
	if len(servers) == 0 {
		var err error
		if servers, err = nameServers(ctx, zone); err != nil {
			return err
		}
		recursive = false
	}
	for _, srv := range servers {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
		m.RecursionDesired = recursive
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).ExchangeContext(ctx, m, srv)
		if err != nil {
			return fmt.Errorf("ask %s: %w", srv, err)
		}
		found := false
		for _, rr := range r.Answer {
			if txt, ok := rr.(*dns.TXT); ok && strings.Join(txt.Txt, "") == value {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s does not answer it yet (%s)", srv, dns.RcodeToString[r.Rcode])
		}
	}
	return nil
}

// nameServers returns the addresses of zone's authoritative name servers.
func nameServers(ctx context.Context, zone string) ([]string, error) {
	nss, err := net.DefaultResolver.LookupNS(ctx, zone)
	if err != nil {
		return nil, fmt.Errorf("name servers of %s: %w", zone, err)
	}
	var addrs []string
	for _, ns := range nss {
		ips, err := net.DefaultResolver.LookupHost(ctx, ns.Host)
		if err != nil {
			return nil, fmt.Errorf("name server %s: %w", ns.Host, err)
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, "53"))
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("zone %s has no name servers", zone)
	}
	return addrs, nil
}

// errNoZone: the DNS provider has no zone that the name lies in.
var errNoZone = errors.New("no zone of the DNS provider contains the name")

// zoneOf returns the longest of zones that name lies in.
func zoneOf(name string, zones []libdns.Zone) (string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	best := ""
	for _, z := range zones {
		zn := strings.ToLower(strings.TrimSuffix(z.Name, "."))
		if (name == zn || strings.HasSuffix(name, "."+zn)) && len(zn) > len(best) {
			best = zn
		}
	}
	if best == "" {
		return "", fmt.Errorf("%s: %w", name, errNoZone)
	}
	return best, nil
}
