package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const testEdgeHost = "edge.zeitwork.test"

// withDomains gives the API a custom domains service that checks DNS
// against its own authoritative server, returned for the test to fill.
func (e *env) withDomains() *dnstest.Server {
	e.t.Helper()
	dns := dnstest.Start(e.t)
	svc, err := domains.New(e.pool(), e.api.Deploys.Queue.(*queue.Queue), domains.Config{
		EdgeHost: testEdgeHost, PlatformDomains: []string{testAppsDomain, "zeitwork.test"}, Resolver: domains.NewResolver(dns.Addr),
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: 24 * time.Hour,
	}, zlog.Discard())
	if err != nil {
		e.t.Fatal(err)
	}
	e.api.Domains = project.Domains{DB: e.pool(), Service: svc}
	return dns
}

func (e *env) addDomain(u user, p Project, body string) Domain {
	e.t.Helper()
	res := e.do("POST", "/v1/projects/"+p.ID.String()+"/domains", body, session(u)...)
	if res.Code != http.StatusCreated {
		e.t.Fatalf("POST domains %s: %d %s", body, res.Code, res.body)
	}
	var d Domain
	res.decode(e.t, &d)
	return d
}

func (e *env) verify(u user, p Project, name string) Domain {
	e.t.Helper()
	res := e.do("POST", "/v1/projects/"+p.ID.String()+"/domains/"+name+"/verify", "", session(u)...)
	if res.Code != http.StatusOK {
		e.t.Fatalf("verify %s: %d %s", name, res.Code, res.body)
	}
	var d Domain
	res.decode(e.t, &d)
	return d
}

func TestCustomDomains(t *testing.T) {
	e := newEnv(t)
	dns := e.withDomains()
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"shop"}`)
	base := "/v1/projects/" + p.ID.String() + "/domains"

	// Added pending, with the records to create.
	d := e.addDomain(alice, p, `{"name":"  Shop.Example.COM. "}`)
	if d.Name != "shop.example.com" || d.Status != "pending" || d.Reason != "" || d.VerifiedAt != nil || len(d.DNSRecords) != 2 {
		t.Fatalf("added %+v", d)
	}
	cname, txt := d.DNSRecords[0], d.DNSRecords[1]
	if cname.Type != "CNAME" || cname.Name != "shop.example.com" || cname.Value != testEdgeHost {
		t.Fatalf("CNAME record %+v", cname)
	}
	if txt.Type != "TXT" || txt.Name != "_zeitwork.shop.example.com" || !strings.HasPrefix(txt.Value, "zeitwork-verify-") {
		t.Fatalf("TXT record %+v", txt)
	}
	if n := e.count(`SELECT count(*) FROM river_job WHERE kind = 'domain_verify'`); n != 1 {
		t.Fatalf("%d checks queued", n)
	}

	// Checked before DNS is set: pending, with what was found and expected.
	got := e.verify(alice, p, "shop.example.com")
	if got.Status != "pending" || !strings.Contains(got.Reason, "expected shop.example.com CNAME "+testEdgeHost) || got.LastCheckedAt == nil {
		t.Fatalf("unverified: %+v", got)
	}
	// Any spelling of the name finds it.
	res := e.do("GET", base+"/SHOP.example.com", "", bearer(alice)...)
	if res.Code != http.StatusOK || !strings.Contains(res.body, got.Reason[:20]) {
		t.Fatalf("GET: %d %s", res.Code, res.body)
	}
	dns.SetCNAME("shop.example.com", testEdgeHost)
	if got := e.verify(alice, p, "shop.example.com"); got.Status != "verified" || got.Reason != "" || got.VerifiedAt == nil {
		t.Fatalf("after the CNAME: %+v", got)
	}

	// Bad names: a 422 with the reason; nothing written.
	for body, why := range map[string]string{
		`{"name":"https://shop.example.com/x"}`: "without scheme or path",
		`{"name":"10.0.0.1"}`:                   "IP address",
		`{"name":"localhost"}`:                  "single label",
		`{"name":"co.uk"}`:                      "public suffix",
		`{"name":"x.apps.test"}`:                "platform",
		`{"name":"` + testEdgeHost + `"}`:       "platform",
		`{"name":"bad_name.example.com"}`:       "not a valid host name",
		`{"name":"a.example.com:443"}`:          "port",
	} {
		if pb := e.wantProblem(e.do("POST", base, body, session(alice)...), http.StatusUnprocessableEntity); !strings.Contains(pb.Detail, why) {
			t.Errorf("%s: %q, want it to say %q", body, pb.Detail, why)
		}
	}
	e.wantProblem(e.do("POST", base, `{}`, session(alice)...), http.StatusUnprocessableEntity)
	e.wantProblem(e.do("POST", base, `{"name":"shop.example.com"}`, session(alice)...), http.StatusConflict)

	// Another project: the verified name is a 409, unless it asks to move
	// it; then only the TXT record moves it, not the CNAME.
	other := e.createProject(alice, `{"name":"other"}`)
	otherBase := "/v1/projects/" + other.ID.String() + "/domains"
	if pb := e.wantProblem(e.do("POST", otherBase, `{"name":"shop.example.com"}`, session(alice)...), http.StatusConflict); !strings.Contains(pb.Detail, "verified by another project") {
		t.Fatalf("409: %+v", pb)
	}
	mv := e.addDomain(alice, other, `{"name":"shop.example.com","move":true}`)
	if got := e.verify(alice, other, "shop.example.com"); got.Status != "pending" || !strings.Contains(got.Reason, "only the TXT token") {
		t.Fatalf("moved by a CNAME: %+v", got)
	}
	dns.SetTXT(mv.DNSRecords[1].Name, mv.DNSRecords[1].Value)
	if got := e.verify(alice, other, "shop.example.com"); got.Status != "verified" {
		t.Fatalf("not moved by the TXT record: %+v", got)
	}
	var first Domain
	e.do("GET", base+"/shop.example.com", "", session(alice)...).decode(t, &first)
	if first.Status != "failed" || !strings.Contains(first.Reason, "moved to another project") {
		t.Fatalf("the old claim: %+v", first)
	}

	// Lists page by cursor.
	for i := range 3 {
		e.addDomain(alice, p, fmt.Sprintf(`{"name":"d%d.example.com"}`, i))
	}
	var names []string
	cursor := ""
	for range 10 {
		var pg struct {
			Items      []Domain `json:"items"`
			NextCursor string   `json:"next_cursor"`
		}
		res := e.do("GET", base+"?limit=3&cursor="+cursor, "", session(alice)...)
		res.decode(t, &pg)
		if res.Code != http.StatusOK {
			t.Fatalf("list: %d %s", res.Code, res.body)
		}
		for _, d := range pg.Items {
			names = append(names, d.Name)
		}
		if cursor = pg.NextCursor; cursor == "" {
			break
		}
	}
	if strings.Join(names, ",") != "shop.example.com,d0.example.com,d1.example.com,d2.example.com" {
		t.Fatalf("listed %v", names)
	}

	// Removed: gone for this project, and free for another at once.
	if res := e.do("DELETE", otherBase+"/shop.example.com", "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.Code, res.body)
	}
	for _, res := range []response{
		e.do("GET", otherBase+"/shop.example.com", "", session(alice)...),
		e.do("DELETE", otherBase+"/shop.example.com", "", session(alice)...),
		e.do("POST", otherBase+"/shop.example.com/verify", "", session(alice)...),
		e.do("GET", otherBase+"/not_a_name", "", session(alice)...),
	} {
		if pb := e.wantProblem(res, http.StatusNotFound); pb.Detail != "no such domain" {
			t.Errorf("%+v", pb)
		}
	}
	third := e.createProject(alice, `{"name":"third"}`)
	e.addDomain(alice, third, `{"name":"shop.example.com"}`)
}

// TestDeletedProjectFreesItsDomains: a project's verified name can be
// added and verified by a CNAME alone (no move) once the project is gone.
func TestDeletedProjectFreesItsDomains(t *testing.T) {
	e := newEnv(t)
	dns := e.withDomains()
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"old"}`)
	e.addDomain(alice, p, `{"name":"www.example.com"}`)
	dns.SetCNAME("www.example.com", testEdgeHost)
	if got := e.verify(alice, p, "www.example.com"); got.Status != "verified" {
		t.Fatalf("%+v", got)
	}
	if res := e.do("DELETE", "/v1/projects/"+p.ID.String(), "", session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.Code, res.body)
	}
	// The name is free, but the CNAME left behind was the old project's:
	// another project proves it with its TXT record.
	next := e.createProject(alice, `{"name":"new"}`)
	added := e.addDomain(alice, next, `{"name":"www.example.com"}`)
	if got := e.verify(alice, next, "www.example.com"); got.Status != "pending" || !strings.Contains(got.Reason, "another project had it verified before") {
		t.Fatalf("the freed name on the old CNAME: %+v", got)
	}
	for _, r := range added.DNSRecords {
		if r.Type == "TXT" {
			dns.SetTXT(r.Name, r.Value)
		}
	}
	if got := e.verify(alice, next, "www.example.com"); got.Status != "verified" {
		t.Fatalf("the freed name with its TXT record: %+v", got)
	}
}

func TestDomainsUnconfiguredAre503(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"shop"}`)
	e.wantProblem(e.do("GET", "/v1/projects/"+p.ID.String()+"/domains", "", session(alice)...), http.StatusServiceUnavailable)
}

// Each check is DNS lookups made by the api: a member's are counted.
func TestDomainChecksAreLimited(t *testing.T) {
	e := newEnv(t)
	e.withClock(Limits{DomainChecks: ratelimit.Limit{Max: 1, Per: time.Hour}})
	e.withDomains()
	alice, bob := e.signIn(1, "alice"), e.signIn(2, "bob")
	p := e.createProject(alice, `{"name":"shop"}`)
	dom := e.addDomain(alice, p, `{"name":"shop.example.com"}`)
	verify := "/v1/projects/" + p.ID.String() + "/domains/" + dom.Name + "/verify"
	if res := e.do("POST", verify, "", session(alice)...); res.Code != http.StatusOK {
		t.Fatalf("first check: %d %s", res.Code, res.body)
	}
	e.wantTooMany(e.do("POST", verify, "", bearer(alice)...), "3599")
	// Another member's count is their own.
	q := e.createProject(bob, `{"name":"other"}`)
	other := e.addDomain(bob, q, `{"name":"other.example.com"}`)
	if res := e.do("POST", "/v1/projects/"+q.ID.String()+"/domains/"+other.Name+"/verify", "", session(bob)...); res.Code != http.StatusOK {
		t.Fatalf("bob's check: %d %s", res.Code, res.body)
	}
}
