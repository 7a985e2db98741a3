package management_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type domainFixture struct {
	pool    *pgxpool.Pool
	svc     *domains.Service
	dns     *dnstest.Server
	srv     *httptest.Server
	project uuid.UUID
}

// newDomainFixture serves the management API with the domain routes only,
// checking DNS against a test server; checks run when asked (no workers).
func newDomainFixture(t *testing.T) *domainFixture {
	t.Helper()
	pool := testdb.New(t)
	dns := dnstest.Start(t)
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := domains.New(pool, q, domains.Config{
		EdgeHost: "edge.zeitwork.com", PlatformDomains: []string{"zeitwork.com", "zeitwork.app", "zeitwork-dns.com"},
		Resolver:      domains.NewResolver(dns.Addr),
		CheckInterval: 30 * time.Second, MaxCheckInterval: 15 * time.Minute, GiveUpAfter: 7 * 24 * time.Hour,
	}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	api := &management.API{Pool: pool, Queue: q, Token: token, Log: zlog.Discard(), Domains: svc}
	f := &domainFixture{pool: pool, svc: svc, dns: dns, srv: httptest.NewServer(api.Handler()), project: testdb.Project(t, pool)}
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request with the cluster token (unless header overrides
// Authorization) and returns the response and its body.
func (f *domainFixture) do(t *testing.T, method, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func (f *domainFixture) domainPath(project uuid.UUID, rest string) string {
	return "/v1/projects/" + project.String() + "/domains" + rest
}

func unmarshal[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, b, err)
	}
	return v
}

func (f *domainFixture) add(t *testing.T, project uuid.UUID, name string) management.Domain {
	t.Helper()
	resp, body := f.do(t, "POST", f.domainPath(project, ""), `{"name": "`+name+`"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("add %s: %d %s", name, resp.StatusCode, body)
	}
	return unmarshal[management.Domain](t, body)
}

func (f *domainFixture) verify(t *testing.T, d management.Domain) management.Domain {
	t.Helper()
	resp, body := f.do(t, "POST", f.domainPath(d.ProjectID, "/"+d.ID.String()+"/verify"), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("verify %s: %d %s", d.Name, resp.StatusCode, body)
	}
	return unmarshal[management.Domain](t, body)
}

func TestDomainRoutes(t *testing.T) {
	t.Parallel()
	f := newDomainFixture(t)
	ctx := context.Background()

	resp, body := f.do(t, "POST", f.domainPath(f.project, ""), `{"name": "App.Dokedu.org"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	// The wire shape, field by field.
	raw := unmarshal[map[string]any](t, body)
	for _, k := range []string{"id", "project_id", "name", "status", "verification", "failure_reason", "verified_at", "last_checked_at", "created_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("domain JSON has no %q: %s", k, body)
		}
	}
	d := unmarshal[management.Domain](t, body)
	if d.Name != "app.dokedu.org" || d.Status != domains.StatusPending || d.ProjectID != f.project || d.ID.Version() != 7 || d.VerifiedAt != nil || d.FailureReason != nil {
		t.Fatalf("POST answered %+v", d)
	}
	if v := d.Verification; v.CNAMETarget != "edge.zeitwork.com" || v.TXTName != "_zeitwork.app.dokedu.org" || !strings.HasPrefix(v.TXTValue, "zeitwork-verify-") {
		t.Fatalf("verification = %+v", v)
	}
	self := f.domainPath(f.project, "/"+d.ID.String())
	if loc := resp.Header.Get("Location"); loc != self {
		t.Errorf("Location = %q, want %q", loc, self)
	}

	resp, body = f.do(t, "GET", f.domainPath(f.project, ""), "")
	list := unmarshal[struct {
		Domains []management.Domain `json:"domains"`
	}](t, body)
	if resp.StatusCode != http.StatusOK || len(list.Domains) != 1 || list.Domains[0].ID != d.ID || list.Domains[0].Verification != d.Verification {
		t.Fatalf("GET list: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do(t, "GET", self, "")
	if got := unmarshal[management.Domain](t, body); resp.StatusCode != http.StatusOK || got.ID != d.ID || got.Name != d.Name || got.Status != domains.StatusPending {
		t.Fatalf("GET one: %d %s", resp.StatusCode, body)
	}

	// Checked before DNS is set up: still pending, saying why.
	got := f.verify(t, d)
	if got.Status != domains.StatusPending || got.FailureReason == nil || got.LastCheckedAt == nil ||
		!strings.Contains(*got.FailureReason, "expected app.dokedu.org CNAME edge.zeitwork.com") {
		t.Fatalf("verify without DNS: %+v", got)
	}

	f.dns.SetCNAME("app.dokedu.org", "edge.zeitwork.com")
	got = f.verify(t, d)
	if got.Status != domains.StatusVerified || got.VerifiedAt == nil || got.FailureReason != nil {
		t.Fatalf("verify with the CNAME: %+v", got)
	}
	// Verifying a verified domain changes nothing.
	if again := f.verify(t, d); again.Status != domains.StatusVerified || !again.VerifiedAt.Equal(*got.VerifiedAt) {
		t.Fatalf("verify again: %+v", again)
	}

	resp, body = f.do(t, "DELETE", self, "")
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	if _, err := f.svc.Verified(ctx, "app.dokedu.org"); !errors.Is(err, domains.ErrNotFound) {
		t.Fatalf("still routed after DELETE: err = %v", err)
	}
	if resp, body = f.do(t, "GET", self, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET after DELETE: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do(t, "GET", f.domainPath(f.project, ""), "")
	if list := unmarshal[map[string][]management.Domain](t, body); resp.StatusCode != http.StatusOK || len(list["domains"]) != 0 {
		t.Fatalf("list after DELETE: %d %s", resp.StatusCode, body)
	}
}

func TestDomainRoutesMoveAVerifiedNameOnlyWithTheTXTToken(t *testing.T) {
	t.Parallel()
	f := newDomainFixture(t)
	other := testdb.Project(t, f.pool)
	f.dns.SetCNAME("app.dokedu.org", "edge.zeitwork.com")
	first := f.verify(t, f.add(t, f.project, "app.dokedu.org"))
	if first.Status != domains.StatusVerified {
		t.Fatalf("first claim: %+v", first)
	}

	second := f.add(t, other, "app.dokedu.org")
	if second = f.verify(t, second); second.Status != domains.StatusPending || !strings.Contains(*second.FailureReason, "verified by another project") {
		t.Fatalf("second claim with the CNAME only: %+v", second)
	}
	f.dns.SetTXT(second.Verification.TXTName, second.Verification.TXTValue)
	if second = f.verify(t, second); second.Status != domains.StatusVerified {
		t.Fatalf("second claim with its TXT token: %+v", second)
	}
	_, body := f.do(t, "GET", f.domainPath(f.project, "/"+first.ID.String()), "")
	if first = unmarshal[management.Domain](t, body); first.Status != domains.StatusFailed || first.VerifiedAt != nil {
		t.Fatalf("first claim after the move: %s", body)
	}
}

func TestDomainRoutesRefuseBadInput(t *testing.T) {
	t.Parallel()
	f := newDomainFixture(t)
	other := testdb.Project(t, f.pool)
	mine := f.add(t, f.project, "app.dokedu.org")
	theirs := f.add(t, other, "shop.example.com")
	unknown := id.New().String()
	list := f.domainPath(f.project, "")
	at := func(d management.Domain, rest string) string { return f.domainPath(f.project, "/"+d.ID.String()+rest) }

	for _, tt := range []struct {
		what, method, path, body string
		header                   []string
		status                   int
		code                     string
	}{
		{"bad JSON", "POST", list, `{"name":`, nil, 400, "bad_request"},
		{"empty body", "POST", list, ``, nil, 400, "bad_request"},
		{"name not a string", "POST", list, `{"name": 5}`, nil, 400, "bad_request"},
		{"unknown field", "POST", list, `{"name": "a.example.com", "project": "x"}`, nil, 400, "bad_request"},
		{"two objects", "POST", list, `{"name": "a.example.com"} {}`, nil, 400, "bad_request"},
		{"no name", "POST", list, `{}`, nil, 400, "bad_request"},
		{"not JSON", "POST", list, `name=a.example.com`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"invalid name", "POST", list, `{"name": "not a host!"}`, nil, 400, "invalid_domain_name"},
		{"single label", "POST", list, `{"name": "localhost"}`, nil, 400, "invalid_domain_name"},
		{"IPv4", "POST", list, `{"name": "192.0.2.1"}`, nil, 400, "invalid_domain_name"},
		{"IPv6", "POST", list, `{"name": "[2001:db8::1]"}`, nil, 400, "invalid_domain_name"},
		{"with port", "POST", list, `{"name": "a.example.com:8080"}`, nil, 400, "invalid_domain_name"},
		{"URL", "POST", list, `{"name": "https://a.example.com/"}`, nil, 400, "invalid_domain_name"},
		{"public suffix", "POST", list, `{"name": "co.uk"}`, nil, 400, "invalid_domain_name"},
		{"apps domain", "POST", list, `{"name": "myapp.zeitwork.app"}`, nil, 400, "platform_domain"},
		{"platform domain", "POST", list, `{"name": "zeitwork.com"}`, nil, 400, "platform_domain"},
		{"edge host", "POST", list, `{"name": "EDGE.zeitwork.com."}`, nil, 400, "platform_domain"},
		{"duplicate", "POST", list, `{"name": "APP.dokedu.org"}`, nil, 409, "conflict"},
		{"unknown project", "POST", "/v1/projects/" + unknown + "/domains", `{"name": "a.example.com"}`, nil, 404, "not_found"},
		{"project not an id", "POST", "/v1/projects/nope/domains", `{"name": "a.example.com"}`, nil, 400, "bad_request"},
		{"list, unknown project", "GET", "/v1/projects/" + unknown + "/domains", "", nil, 404, "not_found"},
		{"list, project not an id", "GET", "/v1/projects/nope/domains", "", nil, 400, "bad_request"},
		{"get, unknown domain", "GET", list + "/" + unknown, "", nil, 404, "not_found"},
		{"get, domain not an id", "GET", list + "/nope", "", nil, 400, "bad_request"},
		{"get, another project's domain", "GET", at(theirs, ""), "", nil, 404, "not_found"},
		{"verify, unknown domain", "POST", list + "/" + unknown + "/verify", "", nil, 404, "not_found"},
		{"verify, another project's domain", "POST", at(theirs, "/verify"), "", nil, 404, "not_found"},
		{"verify, domain not an id", "POST", list + "/nope/verify", "", nil, 400, "bad_request"},
		{"delete, unknown domain", "DELETE", list + "/" + unknown, "", nil, 404, "not_found"},
		{"delete, another project's domain", "DELETE", at(theirs, ""), "", nil, 404, "not_found"},
		{"delete, domain not an id", "DELETE", list + "/nope", "", nil, 400, "bad_request"},
		{"wrong method", "PUT", at(mine, ""), `{}`, nil, 405, "method_not_allowed"},
		{"no token", "GET", list, "", []string{"Authorization", ""}, 401, "unauthorized"},
		{"wrong token", "DELETE", at(mine, ""), "", []string{"Authorization", "Bearer nope"}, 401, "unauthorized"},
	} {
		resp, body := f.do(t, tt.method, tt.path, tt.body, tt.header...)
		e := unmarshal[httpapi.ErrorBody](t, body)
		if resp.StatusCode != tt.status || e.Code != tt.code || e.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s, want %d with code %q", tt.what, resp.StatusCode, body, tt.status, tt.code)
		}
	}

	// Nothing was written or removed by any of it.
	var names []string
	for _, p := range []uuid.UUID{f.project, other} {
		ds, err := f.svc.List(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			names = append(names, d.Name)
		}
	}
	if strings.Join(names, ",") != "app.dokedu.org,shop.example.com" {
		t.Fatalf("domains after the refused requests: %v", names)
	}
	var tasks int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'domain_verify'`).Scan(&tasks); err != nil {
		t.Fatal(err)
	}
	if tasks != 2 {
		t.Fatalf("%d verify tasks queued, want the two added domains' only", tasks)
	}
}
