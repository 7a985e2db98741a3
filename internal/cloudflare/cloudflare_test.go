package cloudflare

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	libdnscloudflare "github.com/libdns/cloudflare"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/zeitwork/zeitwork/internal/dnstest"
)

const token = "test-token-5f2b"

// start runs an emulator with zone example.test on a DNS server.
func start(t *testing.T) (*Emulator, *httptest.Server, *dnstest.Server) {
	t.Helper()
	ns := dnstest.Start(t)
	e := NewEmulator(token, ns)
	e.AddZone("example.test")
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv, ns
}

// txtAt asks the DNS server for name's TXT strings.
func txtAt(t *testing.T, addr, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	r, _, err := new(dns.Client).Exchange(m, addr)
	if err != nil {
		t.Fatalf("TXT %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, txt.Txt...)
		}
	}
	slices.Sort(out)
	return out
}

// The reference client: github.com/libdns/cloudflare, unmodified, talks to
// the emulator as it would to api.cloudflare.com. It hard-codes that host
// and uses http.DefaultClient, so the test points that client's transport
// at the emulator.
func TestEmulatorServesLibdnsCloudflare(t *testing.T) {
	e, srv, ns := start(t)
	target, _ := url.Parse(srv.URL)
	orig := http.DefaultClient.Transport
	http.DefaultClient.Transport = rewrite{host: "api.cloudflare.com", to: target}
	t.Cleanup(func() { http.DefaultClient.Transport = orig })

	ctx := context.Background()
	p := &libdnscloudflare.Provider{APIToken: token}
	for _, v := range []string{"token-one", "token-two"} {
		got, err := p.AppendRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: v}})
		if err != nil {
			t.Fatalf("append %s: %v", v, err)
		}
		if len(got) != 1 || got[0].RR().Data != v || got[0].RR().Name != "_acme-challenge" {
			t.Fatalf("append %s returned %+v", v, got)
		}
	}
	if got := txtAt(t, ns.Addr, "_acme-challenge.example.test"); !slices.Equal(got, []string{"token-one", "token-two"}) {
		t.Fatalf("DNS after two appends: %q", got)
	}

	all, err := p.GetRecords(ctx, "example.test.")
	if err != nil || len(all) != 2 {
		t.Fatalf("get records: %v %+v", err, all)
	}

	deleted, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "token-one"}})
	if err != nil || len(deleted) != 1 {
		t.Fatalf("delete: %v %+v", err, deleted)
	}
	if got := txtAt(t, ns.Addr, "_acme-challenge.example.test"); !slices.Equal(got, []string{"token-two"}) {
		t.Fatalf("DNS after deleting one: %q", got)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "token-two"}}); err != nil {
		t.Fatal(err)
	}
	if got := txtAt(t, ns.Addr, "_acme-challenge.example.test"); len(got) != 0 {
		t.Fatalf("DNS after deleting both: %q", got)
	}
	if got := e.TXT("_acme-challenge.example.test"); len(got) != 0 {
		t.Fatalf("records left: %q", got)
	}

	// A zone the account does not have, and a wrong token, fail as they
	// would against Cloudflare.
	if _, err := p.AppendRecords(ctx, "other.test.", []libdns.Record{libdns.TXT{Name: "x", Text: "y"}}); err == nil || !strings.Contains(err.Error(), "expected 1 zone, got 0") {
		t.Fatalf("unknown zone: %v", err)
	}
	bad := &libdnscloudflare.Provider{APIToken: "wrong"}
	if _, err := bad.GetRecords(ctx, "example.test."); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("wrong token: %v", err)
	}
}

type rewrite struct {
	host string
	to   *url.URL
}

func (rw rewrite) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != rw.host {
		return nil, fmt.Errorf("unexpected request to %s", r.URL)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = rw.to.Scheme, rw.to.Host
	return http.DefaultTransport.RoundTrip(r)
}

func TestProvider(t *testing.T) {
	e, srv, ns := start(t)
	for i := range 60 { // more than a page of 50
		e.AddZone(fmt.Sprintf("z%02d.test", i))
	}
	e.AddZone("sub.example.test")
	ctx := context.Background()
	p := NewProvider(srv.URL+"/client/v4", token)

	zones, err := p.ListZones(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(zones) != 62 || !slices.Contains(zones, libdns.Zone{Name: "sub.example.test"}) {
		t.Fatalf("ListZones: %d zones: %+v", len(zones), zones)
	}

	// The DNS server answers the plain ACME token.
	recs := []libdns.Record{
		libdns.TXT{Name: "_acme-challenge", Text: "acme-token", TTL: 2 * time.Minute},
		libdns.TXT{Name: "_acme-challenge", Text: strings.Repeat("x", 300) + `"quoted" back\slash`},
	}
	got, err := p.AppendRecords(ctx, "example.test", recs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].RR().Data != "acme-token" || got[0].RR().TTL != 2*time.Minute {
		t.Fatalf("AppendRecords returned %+v", got)
	}
	if got := txtAt(t, ns.Addr, "_acme-challenge.example.test"); !slices.Equal(got, []string{"acme-token"}) {
		t.Fatalf("DNS: %q", got)
	}
	// A value that needs quoting and chunking round-trips through the API
	// (not through dnstest, which answers one string of at most 255 bytes).
	got, err = p.AppendRecords(ctx, "example.test", recs[1:])
	if err != nil {
		t.Fatal(err)
	}
	long := recs[1].RR().Data
	if len(got) != 1 || got[0].RR().Data != long {
		t.Fatalf("AppendRecords returned %+v", got)
	}
	if got := e.TXT("_acme-challenge.example.test"); len(got) != 2 || got[1] != long {
		t.Fatalf("stored %q", got)
	}

	// The same record twice is refused, as Cloudflare does.
	if _, err := p.AppendRecords(ctx, "example.test", recs[:1]); err == nil || !strings.Contains(err.Error(), "81058") {
		t.Fatalf("duplicate: %v", err)
	}

	// Delete matches on the value: the other record stays.
	deleted, err := p.DeleteRecords(ctx, "example.test", recs[1:])
	if err != nil || len(deleted) != 1 {
		t.Fatalf("delete: %v %+v", err, deleted)
	}
	if got := e.TXT("_acme-challenge.example.test"); !slices.Equal(got, []string{"acme-token"}) {
		t.Fatalf("after delete: %q", got)
	}
	if deleted, err := p.DeleteRecords(ctx, "example.test", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "absent"}}); err != nil || len(deleted) != 0 {
		t.Fatalf("deleting an absent record: %v %+v", err, deleted)
	}

	// A wrong token is an error that names the API's answer, not the token.
	bad := NewProvider(srv.URL+"/client/v4", "not-the-token")
	_, err = bad.ListZones(ctx)
	if err == nil || !strings.Contains(err.Error(), "10000 Authentication error") || strings.Contains(err.Error(), "not-the-token") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := p.AppendRecords(ctx, "missing.test", recs[:1]); err == nil || !strings.Contains(err.Error(), "0 zones") {
		t.Fatalf("missing zone: %v", err)
	}
}

func TestTXTContent(t *testing.T) {
	for _, text := range []string{"", "plain", `a "b" \c`, strings.Repeat("y", 600), "tab\there\x00"} {
		enc := encodeTXT(text)
		dec, err := decodeTXT(enc)
		if err != nil || dec != text {
			t.Errorf("round trip %q: encoded %q, decoded %q, %v", text, enc, dec, err)
		}
	}
	if enc := encodeTXT(strings.Repeat("y", 300)); strings.Count(enc, `"`) != 4 {
		t.Errorf("300 bytes should be two character-strings: %q", enc)
	}
	if dec, _ := decodeTXT("unquoted value"); dec != "unquoted value" {
		t.Errorf("unquoted content is literal, got %q", dec)
	}
	for _, bad := range []string{`"open`, `"a" b`, `"\`} {
		if _, err := decodeTXT(bad); err == nil {
			t.Errorf("decodeTXT(%q) should fail", bad)
		}
	}
}
