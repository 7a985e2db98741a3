package domains_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const edgeHost = "edge.zeitwork.com"

type fixture struct {
	pool *pgxpool.Pool
	dns  *dnstest.Server
	svc  *domains.Service
}

var queueConfig = config.Queue{Workers: 4, JobTimeout: time.Minute, RescueAfter: time.Hour}

// newFixture gives a service on its own database, checking DNS against its
// own authoritative server. With work set, a queue works the checks. Zero
// fields of cfg take the operator's defaults.
func newFixture(t *testing.T, cfg domains.Config, work bool) *fixture {
	t.Helper()
	platform, _ := config.ParseFrom[config.Platform](nil)
	checks, _ := config.ParseFrom[config.CustomDomains](nil)
	cfg.EdgeHost = cmp.Or(cfg.EdgeHost, platform.EdgeHost)
	if cfg.PlatformDomains == nil {
		cfg.PlatformDomains = platform.Reserved()
	}
	cfg.CheckInterval = cmp.Or(cfg.CheckInterval, checks.CheckInterval)
	cfg.MaxCheckInterval = cmp.Or(cfg.MaxCheckInterval, checks.MaxCheckInterval)
	cfg.GiveUpAfter = cmp.Or(cfg.GiveUpAfter, checks.GiveUpAfter)
	pool := testdb.New(t)
	dns := dnstest.Start(t)
	cfg.Resolver = domains.NewResolver(dns.Addr)
	var workers *queue.Workers
	worker := &domains.VerifyWorker{}
	if work {
		workers = queue.NewWorkers(domains.Queue)
		queue.Register(workers, worker)
	}
	q, err := queue.New(pool, workers, queueConfig, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := domains.New(pool, q, cfg, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	worker.Domains = svc
	if work {
		if err := q.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = q.Stop(ctx)
		})
	}
	return &fixture{pool: pool, dns: dns, svc: svc}
}

func (f *fixture) add(t *testing.T, project uuid.UUID, name string) domains.Domain {
	t.Helper()
	d, err := f.svc.Add(context.Background(), project, name)
	if err != nil {
		t.Fatalf("Add(%s): %v", name, err)
	}
	return d
}

func (f *fixture) check(t *testing.T, d domains.Domain) domains.Domain {
	t.Helper()
	got, err := f.svc.Check(context.Background(), d.ID)
	if err != nil {
		t.Fatalf("Check(%s): %v", d.Name, err)
	}
	return got
}

func (f *fixture) get(t *testing.T, id uuid.UUID) domains.Domain {
	t.Helper()
	d, err := f.svc.ByID(context.Background(), id)
	if err != nil {
		t.Fatalf("ByID(%s): %v", id, err)
	}
	return d
}

// jobs counts the verify tasks queued for a domain, in any state.
func jobs(t *testing.T, conn interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, domainID uuid.UUID) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE kind = 'domain_verify' AND args->>'domain_id' = $1`, domainID.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func reason(d domains.Domain) string {
	if d.FailureReason == nil {
		return ""
	}
	return *d.FailureReason
}

func wantReason(t *testing.T, d domains.Domain, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(reason(d), p) {
			t.Errorf("%s: failure reason %q does not mention %q", d.Name, reason(d), p)
		}
	}
}

func TestAddIsPendingWithItsCheckQueuedInTheSameTransaction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	project := testdb.Project(t, f.pool)
	ctx := context.Background()

	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolledBack, err := f.svc.AddTx(ctx, tx, project, "app.dokedu.org")
	if err != nil {
		t.Fatal(err)
	}
	if n := jobs(t, tx, rolledBack.ID); n != 1 {
		t.Fatalf("inside the transaction: %d verify tasks, want 1", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ByID(ctx, rolledBack.ID); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("domain after rollback: err = %v, want no rows", err)
	}
	if n := jobs(t, f.pool, rolledBack.ID); n != 0 {
		t.Fatalf("after rollback: %d verify tasks, want none", n)
	}

	d := f.add(t, project, "app.dokedu.org")
	if d.Status != domains.StatusPending || d.ProjectID != project || d.Name != "app.dokedu.org" || d.VerifiedAt != nil || d.LastCheckedAt != nil {
		t.Fatalf("added domain = %+v, want pending app.dokedu.org, never checked", d)
	}
	if d.ID.Version() != 7 {
		t.Errorf("id %s is UUIDv%d, want v7", d.ID, d.ID.Version())
	}
	if !strings.HasPrefix(d.VerificationToken, "zeitwork-verify-") || len(d.VerificationToken) != len("zeitwork-verify-")+32 {
		t.Errorf("token %q: want zeitwork-verify- and 128 random bits in hex", d.VerificationToken)
	}
	if other := f.add(t, testdb.Project(t, f.pool), "app.dokedu.org"); other.VerificationToken == d.VerificationToken {
		t.Error("two claims got the same token")
	}
	if n := jobs(t, f.pool, d.ID); n != 1 {
		t.Fatalf("after commit: %d verify tasks, want 1", n)
	}
	ins := f.svc.Instructions(d)
	if ins.CNAMETarget != edgeHost || ins.TXTName != "_zeitwork.app.dokedu.org" || ins.TXTValue != d.VerificationToken {
		t.Fatalf("instructions = %+v", ins)
	}
}

func TestAddNormalisesTheName(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	project := testdb.Project(t, f.pool)
	for in, want := range map[string]string{
		"App.Example.COM":       "app.example.com",
		"  shop.example.com.  ": "shop.example.com",
		"bücher.example":        "xn--bcher-kva.example",
		"a-b.c-d.example.co.uk": "a-b.c-d.example.co.uk",
	} {
		if d := f.add(t, project, in); d.Name != want {
			t.Errorf("Add(%q) stored %q, want %q", in, d.Name, want)
		}
	}
}

func TestAddRefusesWhatCannotBeACustomDomain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{PlatformDomains: []string{"zeitwork.com", "zeitwork.app", "zeitwork-dns.com"}}, false)
	project := testdb.Project(t, f.pool)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		want error
	}{
		{"", domains.ErrInvalidName},
		{"   ", domains.ErrInvalidName},
		{"localhost", domains.ErrInvalidName},
		{"1.2.3.4", domains.ErrInvalidName},
		{"127.1", domains.ErrInvalidName},
		{"::1", domains.ErrInvalidName},
		{"[2001:db8::1]:443", domains.ErrInvalidName},
		{"app.example.com:443", domains.ErrInvalidName},
		{"https://app.example.com", domains.ErrInvalidName},
		{"app.example.com/path", domains.ErrInvalidName},
		{"app..example.com", domains.ErrInvalidName},
		{"-app.example.com", domains.ErrInvalidName},
		{"app_1.example.com", domains.ErrInvalidName},
		{"*.example.com", domains.ErrInvalidName},
		{"has space.example.com", domains.ErrInvalidName},
		{strings.Repeat("a", 64) + ".example.com", domains.ErrInvalidName},
		{strings.Repeat("abcdefghi.", 26) + "com", domains.ErrInvalidName},
		{"co.uk", domains.ErrInvalidName},
		{"github.io", domains.ErrInvalidName},
		{"zeitwork.com", domains.ErrPlatformDomain},
		{"edge.zeitwork.com", domains.ErrPlatformDomain},
		{"myapp.zeitwork.app", domains.ErrPlatformDomain},
		{"A.Zeitwork-DNS.com.", domains.ErrPlatformDomain},
	} {
		_, err := f.svc.Add(ctx, project, tt.name)
		if !errors.Is(err, tt.want) {
			t.Errorf("Add(%q): err = %v, want %v", tt.name, err, tt.want)
		}
	}
	if ds, err := f.svc.List(ctx, project); err != nil || len(ds) != 0 {
		t.Fatalf("refused names left rows: %v %v", ds, err)
	}
	// Not being a platform domain is about labels, not text.
	f.add(t, project, "notzeitwork.com")
}

func TestAddRefusesUnknownProjectsAndDuplicates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	if _, err := f.svc.Add(ctx, uuid.Must(uuid.NewV7()), "app.example.com"); !errors.Is(err, domains.ErrProjectNotFound) {
		t.Fatalf("unknown project: err = %v, want ErrProjectNotFound", err)
	}
	project, other := testdb.Project(t, f.pool), testdb.Project(t, f.pool)
	first := f.add(t, project, "app.example.com")
	if _, err := f.svc.Add(ctx, project, "APP.example.com."); !errors.Is(err, domains.ErrExists) {
		t.Fatalf("same name again: err = %v, want ErrExists", err)
	}
	if n := jobs(t, f.pool, first.ID); n != 1 {
		t.Fatalf("%d verify tasks after the refused duplicate, want the first's only", n)
	}
	// Another project may claim it too; only one can ever verify it.
	if d := f.add(t, other, "app.example.com"); d.Status != domains.StatusPending {
		t.Fatalf("second claim = %+v", d)
	}
}

func TestCNAMEToTheEdgeHostVerifies(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	project := testdb.Project(t, f.pool)

	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	d := f.check(t, f.add(t, project, "app.dokedu.org"))
	if d.Status != domains.StatusVerified || d.VerifiedAt == nil || d.LastCheckedAt == nil || d.FailureReason != nil {
		t.Fatalf("CNAME to the edge: %+v, want verified", d)
	}
	owner, err := f.svc.Verified(context.Background(), "app.dokedu.org")
	if err != nil || owner.ID != d.ID {
		t.Fatalf("DomainGetVerifiedByName = %v, %v", owner.ID, err)
	}

	// Through a chain (the customer's own CDN name in between).
	f.dns.SetCNAME("www.dokedu.org", "cdn.dokedu.net")
	f.dns.SetCNAME("cdn.dokedu.net", "EDGE.zeitwork.com.")
	if d := f.check(t, f.add(t, project, "www.dokedu.org")); d.Status != domains.StatusVerified {
		t.Fatalf("CNAME chain to the edge: %s (%s), want verified", d.Status, reason(d))
	}
}

func TestCheckWithoutProofStaysPendingWithAReason(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	project := testdb.Project(t, f.pool)
	f.dns.SetCNAME("elsewhere.example.com", "proxy.other-host.net")
	f.dns.SetA("proxy.other-host.net", net.IPv4(192, 0, 2, 1))
	f.dns.SetA("direct.example.com", net.IPv4(192, 0, 2, 2))
	f.dns.SetA("wrongtoken.example.com", net.IPv4(192, 0, 2, 3))
	f.dns.SetTXT("_zeitwork.wrongtoken.example.com", "zeitwork-verify-00000000000000000000000000000000")

	for _, tt := range []struct {
		name  string
		found []string
	}{
		{"nothing.example.com", []string{"nothing.example.com has no DNS records", "no TXT record at _zeitwork.nothing.example.com"}},
		{"elsewhere.example.com", []string{"CNAME leads to proxy.other-host.net", "no TXT record"}},
		{"direct.example.com", []string{"direct.example.com has no CNAME"}},
		{"wrongtoken.example.com", []string{"do not hold this domain's token"}},
	} {
		added := f.add(t, project, tt.name)
		d := f.check(t, added)
		if d.Status != domains.StatusPending || d.VerifiedAt != nil || d.LastCheckedAt == nil {
			t.Errorf("%s: %+v, want pending and checked", tt.name, d)
		}
		wantReason(t, d, append([]string{"expected " + tt.name + " CNAME " + edgeHost, "_zeitwork." + tt.name}, tt.found...)...)
		if _, err := f.svc.Verified(context.Background(), tt.name); !errors.Is(err, domains.ErrNotFound) {
			t.Errorf("%s: routed while pending (err = %v)", tt.name, err)
		}
	}

	// Fixing DNS and checking again verifies.
	f.dns.Delete("elsewhere.example.com")
	f.dns.SetCNAME("elsewhere.example.com", edgeHost)
	ds, _ := f.svc.List(context.Background(), project)
	for _, d := range ds {
		if d.Name == "elsewhere.example.com" {
			if d = f.check(t, d); d.Status != domains.StatusVerified || d.FailureReason != nil {
				t.Fatalf("after fixing the CNAME: %+v", d)
			}
		}
	}
}

func TestTXTTokenVerifies(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	project := testdb.Project(t, f.pool)
	// An apex cannot have a CNAME: its A record points at the edge's
	// address and the TXT token proves the claim.
	d := f.add(t, project, "dokedu.org")
	f.dns.SetA("dokedu.org", net.IPv4(192, 0, 2, 10))
	f.dns.SetTXT("_zeitwork.dokedu.org", "v=something-else", d.VerificationToken)
	if d = f.check(t, d); d.Status != domains.StatusVerified || d.VerifiedAt == nil {
		t.Fatalf("TXT token: %s (%s), want verified", d.Status, reason(d))
	}
}

func TestVerifiedNameMovesOnlyWithTheTXTToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	first, second := testdb.Project(t, f.pool), testdb.Project(t, f.pool)

	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	a := f.check(t, f.add(t, first, "app.dokedu.org"))
	if a.Status != domains.StatusVerified {
		t.Fatalf("first claim: %+v", a)
	}

	b := f.add(t, second, "app.dokedu.org")
	b = f.check(t, b)
	if b.Status != domains.StatusPending {
		t.Fatalf("second claim with only the CNAME: %+v, want pending", b)
	}
	wantReason(t, b, "verified by another project", "only the TXT token at _zeitwork.app.dokedu.org", "no TXT record")
	if owner, err := f.svc.Verified(ctx, "app.dokedu.org"); err != nil || owner.ID != a.ID {
		t.Fatalf("owner after a CNAME-only claim = %v, %v; want the first project still", owner.ProjectID, err)
	}
	// The owner's own token does not help the newcomer.
	f.dns.SetTXT("_zeitwork.app.dokedu.org", a.VerificationToken)
	if b = f.check(t, b); b.Status != domains.StatusPending {
		t.Fatalf("second claim with the first's token: %+v, want pending", b)
	}

	f.dns.SetTXT("_zeitwork.app.dokedu.org", b.VerificationToken)
	if b = f.check(t, b); b.Status != domains.StatusVerified {
		t.Fatalf("second claim with its TXT token: %+v, want verified", b)
	}
	if owner, err := f.svc.Verified(ctx, "app.dokedu.org"); err != nil || owner.ID != b.ID {
		t.Fatalf("owner after the TXT proof = %v, %v; want the second project", owner.ProjectID, err)
	}
	a = f.get(t, a.ID)
	if a.Status != domains.StatusFailed || a.VerifiedAt != nil {
		t.Fatalf("first claim after losing the name: %+v, want failed", a)
	}
	wantReason(t, a, "moved to another project", "TXT token")
	// The loser's CNAME does not take it back either.
	if a = f.check(t, a); a.Status != domains.StatusFailed {
		t.Fatalf("first claim rechecked with only the CNAME: %+v", a)
	}
}

func TestConcurrentClaimsAreNeverBothVerified(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	first, second := testdb.Project(t, f.pool), testdb.Project(t, f.pool)

	for round := range 20 {
		// A registrable domain per round: a name under one another
		// project had verified needs the TXT token.
		name := fmt.Sprintf("app.r%d-example.com", round)
		f.dns.SetCNAME(name, edgeHost)
		a, b := f.add(t, first, name), f.add(t, second, name)
		if round%2 == 1 { // both tokens published: each claim can move the name
			f.dns.SetTXT("_zeitwork."+name, a.VerificationToken, b.VerificationToken)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			d := a
			if i%2 == 1 {
				d = b
			}
			wg.Go(func() {
				if _, err := f.svc.Check(ctx, d.ID); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("%s: concurrent check: %v", name, err)
		}
		a, b = f.get(t, a.ID), f.get(t, b.ID)
		if (a.Status == domains.StatusVerified) == (b.Status == domains.StatusVerified) {
			t.Fatalf("%s: claims are %s and %s, want exactly one verified", name, a.Status, b.Status)
		}
		loser := a
		if a.Status == domains.StatusVerified {
			loser = b
		}
		if round%2 == 0 {
			wantReason(t, loser, "verified by another project")
		}
	}
}

func TestPendingTooLongIsFailedAndNoLongerSwept(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{GiveUpAfter: 24 * time.Hour, CheckInterval: time.Millisecond}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	d := f.add(t, project, "late.example.com")
	if _, err := f.pool.Exec(ctx, `UPDATE domains SET created_at = now() - interval '25 hours' WHERE id = $1`, d.ID); err != nil {
		t.Fatal(err)
	}
	if d = f.check(t, d); d.Status != domains.StatusFailed {
		t.Fatalf("pending past the deadline: %+v, want failed", d)
	}
	wantReason(t, d, "gave up after 1 day pending", "late.example.com has no DNS records")
	if n, err := f.svc.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want a failed domain left alone", n, err)
	}
	// Its owner fixes DNS and asks again.
	f.dns.SetCNAME("late.example.com", edgeHost)
	if d = f.check(t, d); d.Status != domains.StatusVerified {
		t.Fatalf("failed domain rechecked after fixing DNS: %+v", d)
	}
}

func TestRemoveStopsRoutingAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	project, other := testdb.Project(t, f.pool), testdb.Project(t, f.pool)
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	d := f.check(t, f.add(t, project, "app.dokedu.org"))
	if d.Status != domains.StatusVerified {
		t.Fatalf("%+v", d)
	}

	if err := f.svc.Remove(ctx, other, d.ID); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("Remove by another project: err = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Verified(ctx, "app.dokedu.org"); err != nil {
		t.Fatalf("another project's Remove touched the domain: %v", err)
	}
	if err := f.svc.Remove(ctx, project, d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Verified(ctx, "app.dokedu.org"); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("DomainGetVerifiedByName after Remove: err = %v, want no rows", err)
	}
	if _, err := f.svc.ByID(ctx, d.ID); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("row after Remove: err = %v, want gone", err)
	}
	if err := f.svc.Remove(ctx, project, d.ID); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("second Remove: err = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Check(ctx, d.ID); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("Check after Remove: err = %v, want ErrNotFound", err)
	}
	// Another project may add the name again, but the CNAME left behind
	// is the first project's: only the TXT token verifies it now.
	again := f.check(t, f.add(t, other, "app.dokedu.org"))
	if again.Status != domains.StatusPending {
		t.Fatalf("re-added elsewhere with the old CNAME: %+v, want pending", again)
	}
	f.dns.SetTXT("_zeitwork.app.dokedu.org", again.VerificationToken)
	if again = f.check(t, again); again.Status != domains.StatusVerified {
		t.Fatalf("re-added elsewhere with its TXT token: %+v, want verified", again)
	}
}

func TestSweepQueuesOnlyDuePendingDomains(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{CheckInterval: time.Hour}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	f.dns.SetCNAME("verified.example.com", edgeHost)

	neverChecked := f.add(t, project, "never.example.com")
	justChecked := f.check(t, f.add(t, project, "just.example.com"))
	longAgo := f.check(t, f.add(t, project, "longago.example.com"))
	verified := f.check(t, f.add(t, project, "verified.example.com"))
	f.dns.SetCNAME("stale.example.com", edgeHost)
	stale := f.check(t, f.add(t, project, "stale.example.com"))
	if stale.Status != domains.StatusVerified {
		t.Fatalf("%+v", stale)
	}
	// Verified longer ago than the recheck interval (an hour by default).
	if _, err := f.pool.Exec(ctx, `UPDATE domains SET last_checked_at = now() - interval '61 minutes' WHERE id = $1`, stale.ID); err != nil {
		t.Fatal(err)
	}
	removed := f.add(t, project, "removed.example.com")
	if err := f.svc.Remove(ctx, project, removed.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE domains SET last_checked_at = now() - interval '2 hours' WHERE id = $1`, longAgo.ID); err != nil {
		t.Fatal(err)
	}
	// Start from an empty queue, as after the first checks have run.
	if _, err := f.pool.Exec(ctx, `DELETE FROM river_job`); err != nil {
		t.Fatal(err)
	}

	for range 2 { // a second sweep finds the checks already queued
		if n, err := f.svc.Sweep(ctx); err != nil || n != 3 {
			t.Fatalf("Sweep = %d, %v; want 3 due (2 checks, 1 recheck)", n, err)
		}
	}
	for _, c := range []struct {
		d    domains.Domain
		want int
	}{{neverChecked, 1}, {longAgo, 1}, {justChecked, 0}, {verified, 0}, {stale, 1}, {removed, 0}} {
		if n := jobs(t, f.pool, c.d.ID); n != c.want {
			t.Errorf("%s: %d verify tasks queued, want %d", c.d.Name, n, c.want)
		}
	}
}

func TestWorkerChecksAddedDomainsAndSweepRechecks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{CheckInterval: time.Millisecond}, true)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)

	f.dns.SetCNAME("ready.example.com", edgeHost)
	ready := f.add(t, project, "ready.example.com")
	later := f.add(t, project, "later.example.com")
	eventually(t, "the worker verifies ready.example.com", func() bool { return f.get(t, ready.ID).Status == domains.StatusVerified })
	eventually(t, "the worker checks later.example.com", func() bool { return f.get(t, later.ID).LastCheckedAt != nil })
	if d := f.get(t, later.ID); d.Status != domains.StatusPending {
		t.Fatalf("later.example.com without DNS: %+v", d)
	}

	f.dns.SetCNAME("later.example.com", edgeHost)
	eventually(t, "a sweep's recheck verifies later.example.com", func() bool {
		if _, err := f.svc.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		return f.get(t, later.ID).Status == domains.StatusVerified
	})

	// A domain removed before its task runs: the task ends quietly.
	gone := f.add(t, project, "gone.example.com")
	if err := f.svc.Remove(ctx, project, gone.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removed domain's task completes", func() bool {
		var state string
		err := f.pool.QueryRow(ctx, `SELECT state FROM river_job WHERE args->>'domain_id' = $1`, gone.ID.String()).Scan(&state)
		if err != nil {
			t.Fatal(err)
		}
		return state == "completed"
	})
}

// eventually waits for cond, failing the test if it never holds. The bound
// is generous: it is there to end a broken test, not to measure speed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A CNAME left pointing at the edge after its project removed the domain
// (or lost it) proves nothing about who asks next: another project needs
// its TXT token, for the name and for any name under the same registrable
// domain. The project that had it may come back on the CNAME.
func TestDanglingCNAMEAfterRemovalNeedsTheTXTToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	owner, attacker := testdb.Project(t, f.pool), testdb.Project(t, f.pool)
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	f.dns.SetCNAME("shop.dokedu.org", edgeHost)

	d := f.check(t, f.add(t, owner, "app.dokedu.org"))
	if d.Status != domains.StatusVerified {
		t.Fatalf("first claim: %+v", d)
	}
	if err := f.svc.Remove(ctx, owner, d.ID); err != nil {
		t.Fatal(err)
	}
	// Its own project again: the CNAME is still its own.
	d = f.check(t, f.add(t, owner, "app.dokedu.org"))
	if d.Status != domains.StatusVerified {
		t.Fatalf("the same project re-adding it: %+v, want verified", d)
	}
	if err := f.svc.Remove(ctx, owner, d.ID); err != nil {
		t.Fatal(err)
	}

	taken := f.check(t, f.add(t, attacker, "app.dokedu.org"))
	if taken.Status != domains.StatusPending {
		t.Fatalf("another project on the dangling CNAME: %+v, want pending", taken)
	}
	wantReason(t, taken, "another project had it verified before", "only the TXT token at _zeitwork.app.dokedu.org")
	if _, err := f.svc.Verified(ctx, "app.dokedu.org"); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("the dangling name is routed (err = %v)", err)
	}
	// A sibling under the same registrable domain, never claimed itself.
	sibling := f.check(t, f.add(t, attacker, "shop.dokedu.org"))
	if sibling.Status != domains.StatusPending {
		t.Fatalf("a sibling of a name another project had: %+v, want pending", sibling)
	}
	wantReason(t, sibling, "app.dokedu.org", "same domain dokedu.org", "TXT token")
	// The owner of the records proves it with the token.
	f.dns.SetTXT("_zeitwork.app.dokedu.org", taken.VerificationToken)
	if taken = f.check(t, taken); taken.Status != domains.StatusVerified {
		t.Fatalf("with its TXT token: %+v, want verified", taken)
	}
}

// A customer's *.example.com CNAME to the edge makes every name below
// point at us, whoever claims it: a name covered by a wildcard needs the
// TXT token even if nobody ever had a name under it.
func TestWildcardCNAMENeedsTheTXTToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	f.dns.SetCNAME("*.customer.com", edgeHost)

	d := f.check(t, f.add(t, project, "evil.customer.com"))
	if d.Status != domains.StatusPending {
		t.Fatalf("a name covered by a wildcard CNAME: %+v, want pending", d)
	}
	wantReason(t, d, "wildcard record (*.customer.com)", "_zeitwork.evil.customer.com")
	if _, err := f.svc.Verified(ctx, "evil.customer.com"); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("routed on a wildcard (err = %v)", err)
	}
	// Deeper names too; an explicit CNAME beside the wildcard is no proof
	// either, since the wildcard still covers its siblings.
	f.dns.SetCNAME("www.customer.com", edgeHost)
	for _, name := range []string{"a.b.customer.com", "www.customer.com"} {
		if d := f.check(t, f.add(t, project, name)); d.Status != domains.StatusPending {
			t.Fatalf("%s under a wildcard: %+v, want pending", name, d)
		}
	}
	f.dns.SetTXT("_zeitwork.evil.customer.com", d.VerificationToken)
	if d = f.check(t, d); d.Status != domains.StatusVerified {
		t.Fatalf("with its TXT token: %+v, want verified", d)
	}
	// Without the wildcard, an explicit CNAME of a zone nobody else had is
	// enough, as before.
	f.dns.SetCNAME("app.other-customer.com", edgeHost)
	if d := f.check(t, f.add(t, project, "app.other-customer.com")); d.Status != domains.StatusVerified {
		t.Fatalf("explicit CNAME, no wildcard: %+v, want verified", d)
	}
}

// A verified domain whose record disappears is rechecked, counted, and
// after RecheckFailures failed rechecks in a row no longer served (the
// edge routes and certifies verified names only); a recheck that passes
// in between resets the count.
func TestVerifiedDomainThatStopsPointingAtUsStopsBeingServed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{RecheckFailures: 2}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	d := f.check(t, f.add(t, project, "app.dokedu.org"))
	if d.Status != domains.StatusVerified {
		t.Fatalf("%+v", d)
	}
	served := func() bool {
		_, err := f.svc.Verified(ctx, "app.dokedu.org")
		return err == nil
	}
	if d = f.check(t, d); d.Status != domains.StatusVerified || d.FailedRechecks != 0 || d.FailureReason != nil {
		t.Fatalf("recheck with the CNAME in place: %+v", d)
	}

	f.dns.Delete("app.dokedu.org")
	d = f.check(t, d)
	if d.Status != domains.StatusVerified || d.FailedRechecks != 1 || !served() {
		t.Fatalf("first failed recheck: %+v (served %v), want still verified with 1 failure", d, served())
	}
	wantReason(t, d, "1 recheck(s) in a row failed", "stops being served after 2", "has no DNS records")

	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	if d = f.check(t, d); d.Status != domains.StatusVerified || d.FailedRechecks != 0 || d.FailureReason != nil {
		t.Fatalf("recheck after DNS came back: %+v, want the count reset", d)
	}

	f.dns.Delete("app.dokedu.org")
	f.dns.SetCNAME("app.dokedu.org", "someone-else.example.net")
	f.check(t, d)
	d = f.check(t, d)
	if d.Status != domains.StatusFailed || d.FailedRechecks != 2 || d.VerifiedAt != nil || served() {
		t.Fatalf("after 2 failed rechecks: %+v (served %v), want failed and not served", d, served())
	}
	wantReason(t, d, "no longer served", "CNAME leads to someone-else.example.net")
	// Failed domains are not swept; their owner asks again once fixed.
	if _, err := f.pool.Exec(ctx, `UPDATE domains SET last_checked_at = now() - interval '1 day'`); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want nothing", n, err)
	}
	f.dns.Delete("app.dokedu.org")
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	if d = f.check(t, d); d.Status != domains.StatusVerified || !served() {
		t.Fatalf("checked again after fixing DNS: %+v", d)
	}
}

// flakyResolver answers nothing: a resolver outage.
type flakyResolver struct{}

func (flakyResolver) LookupCNAME(_ context.Context, host string) (string, error) {
	return "", &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
}

func (flakyResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
}

// Rechecks DNS could not answer prove nothing and are not counted: an
// outage of our own resolver must not take every custom domain down.
func TestRechecksDNSCannotAnswerAreNotCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{RecheckFailures: 1}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	d := f.check(t, f.add(t, project, "app.dokedu.org"))
	if d.Status != domains.StatusVerified {
		t.Fatalf("%+v", d)
	}
	q, err := queue.New(f.pool, nil, queueConfig, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	outage, err := domains.New(f.pool, q, domains.Config{EdgeHost: edgeHost, Resolver: flakyResolver{},
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: time.Hour, RecheckFailures: 1}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if d, err = outage.Check(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	if d.Status != domains.StatusVerified || d.FailedRechecks != 0 {
		t.Fatalf("after rechecks DNS could not answer: %+v, want verified, nothing counted", d)
	}
	wantReason(t, d, "does not count", "server misbehaving")
}

// probeFails answers as next does, except for the wildcard probe, which
// DNS cannot answer.
type probeFails struct{ next domains.Resolver }

func (r probeFails) LookupCNAME(ctx context.Context, host string) (string, error) {
	if strings.HasPrefix(host, "zeitwork-probe-") {
		return "", &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true, IsTemporary: true}
	}
	return r.next.LookupCNAME(ctx, host)
}

func (r probeFails) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return r.next.LookupTXT(ctx, name)
}

// When DNS does not say whether a wildcard covers the name, the CNAME is
// not taken as proof: the check fails closed and goes on.
func TestCNAMEIsNoProofWhileAWildcardCannotBeRuledOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, domains.Config{}, false)
	ctx := context.Background()
	project := testdb.Project(t, f.pool)
	q, err := queue.New(f.pool, nil, queueConfig, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := domains.New(f.pool, q, domains.Config{EdgeHost: edgeHost, Resolver: probeFails{domains.NewResolver(f.dns.Addr)},
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f.dns.SetCNAME("app.dokedu.org", edgeHost)
	d := f.add(t, project, "app.dokedu.org")
	if d, err = svc.Check(ctx, d.ID); err != nil || d.Status != domains.StatusPending {
		t.Fatalf("Check = %+v, %v; want pending", d, err)
	}
	wantReason(t, d, "whether a wildcard record covers it could not be checked", "i/o timeout")
	// The same check with DNS answering verifies it.
	if d = f.check(t, d); d.Status != domains.StatusVerified {
		t.Fatalf("with DNS answering: %+v", d)
	}
}
