package domains

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS that checks ask; *net.Resolver is one.
type Resolver interface {
	// LookupCNAME returns a name host's CNAME chain leads to, or host
	// itself when it has no CNAME. Go's own resolver gives the first hop
	// and the C library's the last, so a check follows the chain itself.
	LookupCNAME(ctx context.Context, host string) (string, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// NewResolver asks the DNS server at addr (host:port), or the system's
// resolver when addr is empty.
func NewResolver(addr string) Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// evidence is what DNS said about a name, gathered before any row is
// locked: lookups take as long as the network does.
type evidence struct {
	name     string
	chain    []string // the names name's CNAME chain leads to, in order
	cnameErr error    // the first lookup's; a later one ends the chain
	txt      []string
	txtErr   error
	// wildcard: a name nobody would create (a random label beside name)
	// also leads to the edge host, so a wildcard record covers name.
	wildcard string // that name's parent, "" if none
	probeErr error  // DNS did not answer the probe: a wildcard is not ruled out
}

// lookup gathers the evidence on name; probe adds the wildcard probe,
// which only matters for a claim not verified yet.
func (s *Service) lookup(ctx context.Context, name string, probe bool) evidence {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	ev := evidence{name: name}
	var wg sync.WaitGroup
	wg.Go(func() { ev.chain, ev.cnameErr = s.followCNAME(ctx, name) })
	wg.Go(func() {
		ev.txt, ev.txtErr = s.cfg.Resolver.LookupTXT(ctx, TXTPrefix+name+".")
	})
	if parent := wildcardParent(name); probe && parent != "" {
		wg.Go(func() {
			chain, err := s.followCNAME(ctx, probeLabel()+"."+parent)
			switch {
			case unanswered(err):
				ev.probeErr = err
			case err == nil && slices.Contains(chain, s.cfg.EdgeHost):
				ev.wildcard = parent
			}
		})
	}
	wg.Wait()
	return ev
}

// registrable is name's registrable domain (example.co.uk for
// app.example.co.uk): whoever controls it controls every name below.
func registrable(name string) string {
	r, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name // Normalize refuses public suffixes; be safe anyway
	}
	return r
}

// wildcardParent is the domain whose wildcard (*.parent) would cover name,
// or "" for a registrable domain itself: a wildcard one level up would be
// a public suffix's, nobody's to set.
func wildcardParent(name string) string {
	if name == registrable(name) {
		return ""
	}
	_, parent, _ := strings.Cut(name, ".")
	return parent
}

// probeLabel is a label no zone has on purpose.
func probeLabel() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "zeitwork-probe-" + hex.EncodeToString(b[:])
}

// maxHops bounds a CNAME chain (and so a loop).
const maxHops = 8

// followCNAME walks name's CNAME chain hop by hop, stopping early at the
// edge host: whatever the edge host's own name leads to is the platform's
// business.
func (s *Service) followCNAME(ctx context.Context, name string) ([]string, error) {
	var chain []string
	cur := name
	for range maxHops {
		// Fully qualified, so that the resolver's search list never
		// turns app.example.com into app.example.com.corp.internal.
		next, err := s.cfg.Resolver.LookupCNAME(ctx, cur+".")
		if err != nil {
			if cur == name {
				return nil, err
			}
			return chain, nil // a dangling hop: the chain shows where it ends
		}
		next = strings.ToLower(strings.TrimSuffix(next, "."))
		if next == "" || next == cur || slices.Contains(chain, next) || next == name {
			return chain, nil
		}
		chain = append(chain, next)
		if next == s.cfg.EdgeHost {
			return chain, nil
		}
		cur = next
	}
	return chain, nil
}

func (ev evidence) cnameReaches(host string) bool {
	return ev.cnameErr == nil && slices.Contains(ev.chain, host)
}

// hasToken: a TXT string holding the token. Holding, not equal to it, so
// that a record written as "zeitwork=<token>", or split into character
// strings that come back joined with others, still counts; 128 random bits
// are not found by accident.
func (ev evidence) hasToken(token string) bool {
	return ev.txtErr == nil && slices.ContainsFunc(ev.txt, func(v string) bool { return strings.Contains(v, token) })
}

// cnameFound says what the CNAME lookup found, for a failure reason.
func (ev evidence) cnameFound() string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(ev.cnameErr, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("%s has no DNS records", ev.name)
	case ev.cnameErr != nil:
		return fmt.Sprintf("looking up %s failed (%v)", ev.name, ev.cnameErr)
	case len(ev.chain) == 0:
		return fmt.Sprintf("%s has no CNAME", ev.name)
	}
	return fmt.Sprintf("%s's CNAME leads to %s", ev.name, strings.Join(ev.chain, " → "))
}

// txtFound says what the TXT lookup found, for a failure reason.
func (ev evidence) txtFound() string {
	txtName := TXTPrefix + ev.name
	var dnsErr *net.DNSError
	switch {
	case errors.As(ev.txtErr, &dnsErr) && dnsErr.IsNotFound, ev.txtErr == nil && len(ev.txt) == 0:
		return "no TXT record at " + txtName
	case ev.txtErr != nil:
		return fmt.Sprintf("looking up TXT %s failed (%v)", txtName, ev.txtErr)
	}
	return fmt.Sprintf("the TXT records at %s do not hold this domain's token", txtName)
}

// Check looks the domain up in DNS and records the outcome: verified when
// its TXT record holds its token, or when its CNAME chain reaches the edge
// host and the CNAME can only be this project's doing; otherwise still
// pending (or failed, once pending too long) with a reason saying what was
// found and what was expected.
//
// The CNAME is not enough (only the TXT token is) when another project has
// the name verified, ever had it or a name under the same registrable
// domain verified, or a wildcard record covers the name: in each case the
// CNAME may be someone else's. A move (the old claim failed, the new one
// verified) is one transaction.
//
// A verified domain is re-verified (see recheck). Checks of claims on the
// same name take turns on the rows' locks, so they never both win; a
// domain removed meanwhile is ErrNotFound.
func (s *Service) Check(ctx context.Context, domainID uuid.UUID) (Domain, error) {
	d, err := newStore(s.pool).get(ctx, domainID)
	if err != nil {
		return Domain{}, err
	}
	if d.Status == StatusVerified {
		return s.recheck(ctx, d)
	}
	ev := s.lookup(ctx, d.Name, true)
	var out Domain
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, err = s.decide(ctx, tx, d, ev)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Domain{}, err
		}
		return Domain{}, fmt.Errorf("check domain %s: %w", d.Name, err)
	}
	return out, nil
}

// decide writes the outcome of a check, under the locks of every claim on
// the name.
func (s *Service) decide(ctx context.Context, tx pgx.Tx, d Domain, ev evidence) (Domain, error) {
	st := newStore(tx)
	claims, err := st.lockByName(ctx, d.Name)
	if err != nil {
		return Domain{}, err
	}
	var self, owner *Domain
	for i := range claims {
		switch c := &claims[i]; {
		case c.ID == d.ID:
			self = c
		case c.Status == StatusVerified:
			owner = c
		}
	}
	if self == nil {
		return Domain{}, fmt.Errorf("%w: %s", ErrNotFound, d.ID)
	}
	if self.Status == StatusVerified { // a concurrent check got there first
		return *self, nil
	}
	txtName := TXTPrefix + self.Name
	byTXT := ev.hasToken(self.VerificationToken)
	byCNAME := ev.cnameReaches(s.cfg.EdgeHost)
	var prior string // a name another project had verified
	if byCNAME && !byTXT && owner == nil {
		if prior, err = st.otherClaim(ctx, self.ProjectID, self.Name, registrable(self.Name)); err != nil {
			return Domain{}, err
		}
	}
	var reason string
	switch {
	case owner != nil && byTXT:
		// Demote before verifying: the unique index on verified names
		// is checked statement by statement.
		if _, err := st.setCheckFailed(ctx, owner.ID, StatusFailed,
			fmt.Sprintf("%s was moved to another project, which proved owning it with the TXT token at %s", self.Name, txtName)); err != nil {
			return Domain{}, err
		}
		s.log.InfoContext(ctx, "domain moved", "name", self.Name, "domain_id", self.ID, "project_id", self.ProjectID, "from_domain_id", owner.ID, "from_project_id", owner.ProjectID)
		return s.verify(ctx, tx, *self, "txt")
	case owner == nil && byTXT:
		return s.verify(ctx, tx, *self, "txt")
	case owner == nil && byCNAME && prior == "" && ev.wildcard == "" && ev.probeErr == nil:
		return s.verify(ctx, tx, *self, "cname")
	case owner == nil && byCNAME && prior == "" && ev.wildcard == "":
		reason = fmt.Sprintf("%s points at %s, but whether a wildcard record covers it could not be checked (%v); checks go on, or the TXT token at %s verifies it; found %s",
			self.Name, s.cfg.EdgeHost, ev.probeErr, txtName, ev.txtFound())
	case owner == nil && byCNAME && prior == self.Name:
		reason = fmt.Sprintf("%s points at %s, but another project had it verified before, so the CNAME may be theirs (left behind when they removed it); only the TXT token at %s verifies it here; found %s",
			self.Name, s.cfg.EdgeHost, txtName, ev.txtFound())
	case owner == nil && byCNAME && prior != "":
		reason = fmt.Sprintf("%s points at %s, but another project had %s verified before, a name under the same domain %s, so the CNAME may be theirs (or a wildcard's); only the TXT token at %s verifies it here; found %s",
			self.Name, s.cfg.EdgeHost, prior, registrable(self.Name), txtName, ev.txtFound())
	case owner == nil && byCNAME:
		reason = fmt.Sprintf("%s points at %s through a wildcard record (*.%s), which anyone's name under it would match; only the TXT token at %s verifies it; found %s",
			self.Name, s.cfg.EdgeHost, ev.wildcard, txtName, ev.txtFound())
	case owner != nil:
		reason = fmt.Sprintf("%s is verified by another project; only the TXT token at %s moves it here (a CNAME to %s is not enough); found %s",
			self.Name, txtName, s.cfg.EdgeHost, ev.txtFound())
	default:
		reason = fmt.Sprintf("expected %s CNAME %s, or the TXT token at %s; found that %s, and %s",
			self.Name, s.cfg.EdgeHost, txtName, ev.cnameFound(), ev.txtFound())
	}
	return s.recordFailure(ctx, st, *self, reason)
}

// verify marks self verified. The locks taken in decide make a clash on
// the verified-name index impossible through this package; should a row be
// verified some other way, the clash is recorded as a failed check, not
// returned as an error.
func (s *Service) verify(ctx context.Context, tx pgx.Tx, self Domain, how string) (Domain, error) {
	sp, err := tx.Begin(ctx) // a savepoint: the clash must not abort tx
	if err != nil {
		return Domain{}, err
	}
	d, err := newStore(sp).setVerified(ctx, self.ID)
	if errors.Is(err, errVerifiedElsewhere) {
		if err := sp.Rollback(ctx); err != nil {
			return Domain{}, err
		}
		return s.recordFailure(ctx, newStore(tx), self, self.Name+" is verified by another project")
	}
	if err != nil {
		return Domain{}, err
	}
	if err := sp.Commit(ctx); err != nil {
		return Domain{}, err
	}
	if err := newStore(tx).recordClaim(ctx, d.ProjectID, d.Name); err != nil {
		return Domain{}, err
	}
	s.log.InfoContext(ctx, "domain verified", "name", d.Name, "domain_id", d.ID, "project_id", d.ProjectID, "by", how)
	return d, nil
}

// recordFailure keeps self pending with reason, or fails it once it has
// been pending for GiveUpAfter. A failed domain stays failed until a check
// passes.
func (s *Service) recordFailure(ctx context.Context, st store, self Domain, reason string) (Domain, error) {
	status := self.Status
	if status == StatusPending && time.Since(self.CreatedAt) >= s.cfg.GiveUpAfter {
		status = StatusFailed
		reason = fmt.Sprintf("gave up after %s pending: %s", days(s.cfg.GiveUpAfter), reason)
		s.log.InfoContext(ctx, "domain verification given up", "name", self.Name, "domain_id", self.ID, "project_id", self.ProjectID)
	}
	if len(reason) > 2000 { // DNS errors can be long; the cut may split a rune
		reason = strings.ToValidUTF8(reason[:2000], "") + "…"
	}
	return st.setCheckFailed(ctx, self.ID, status, reason)
}

// days writes whole days as such ("7 days", not "168h0m0s").
func days(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > day && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}

// recheck re-verifies a verified domain: it stays verified while its CNAME
// chain reaches the edge host or its TXT record holds its token. After
// RecheckFailures failed rechecks in a row it is failed, which stops the
// edge serving it and getting certificates for it; until then the count
// and the reason are on the domain, for its owner to see. A recheck DNS
// could not answer at all (a timeout, SERVFAIL) is recorded but not
// counted: an outage of our resolver must not take every domain down.
func (s *Service) recheck(ctx context.Context, d Domain) (Domain, error) {
	ev := s.lookup(ctx, d.Name, false)
	var out Domain
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		st := newStore(tx)
		claims, err := st.lockByName(ctx, d.Name)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(claims, func(c Domain) bool { return c.ID == d.ID })
		if i < 0 {
			return fmt.Errorf("%w: %s", ErrNotFound, d.ID)
		}
		self := claims[i]
		if self.Status != StatusVerified { // moved or failed meanwhile
			out = self
			return nil
		}
		if ev.cnameReaches(s.cfg.EdgeHost) || ev.hasToken(self.VerificationToken) {
			if out, err = st.setRecheckPassed(ctx, self.ID); err != nil {
				return err
			}
			return st.recordClaim(ctx, self.ProjectID, self.Name)
		}
		found := fmt.Sprintf("expected %s CNAME %s, or the TXT token at %s%s; found that %s, and %s",
			self.Name, s.cfg.EdgeHost, TXTPrefix, self.Name, ev.cnameFound(), ev.txtFound())
		if unanswered(ev.cnameErr) && unanswered(ev.txtErr) {
			out, err = st.setRecheckFailed(ctx, self.ID, 0, "a recheck could not be done (DNS did not answer), so it does not count: "+found)
			return err
		}
		n := self.FailedRechecks + 1
		if n < s.cfg.RecheckFailures {
			out, err = st.setRecheckFailed(ctx, self.ID, 1, fmt.Sprintf(
				"%d recheck(s) in a row failed; the domain stops being served after %d: %s", n, s.cfg.RecheckFailures, found))
			return err
		}
		if _, err = st.setRecheckFailed(ctx, self.ID, 1, found); err != nil {
			return err
		}
		out, err = st.setCheckFailed(ctx, self.ID, StatusFailed, fmt.Sprintf(
			"no longer served: %d rechecks in a row found it no longer points at us; %s. Check it again once DNS is fixed", n, found))
		if err == nil {
			s.log.WarnContext(ctx, "domain no longer points at the edge; stopped serving it", "name", self.Name, "domain_id", self.ID, "project_id", self.ProjectID, "failed_rechecks", n)
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Domain{}, err
		}
		return Domain{}, fmt.Errorf("recheck domain %s: %w", d.Name, err)
	}
	return out, nil
}

// unanswered: the lookup failed without DNS saying the name has no such
// records.
func unanswered(err error) bool {
	var dnsErr *net.DNSError
	return err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound)
}
