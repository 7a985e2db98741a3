package registryauth_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/httpapi/httpapitest"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestTokenEndpointErrorsAreOneStory: the token endpoint refuses in the
// same JSON as every API, a wrong method with 405 and Allow.
func TestTokenEndpointErrorsAreOneStory(t *testing.T) {
	svc := newService(t)
	api := httpapi.Server{Log: zlog.Discard()}
	srv := httptest.NewServer(api.Middleware(svc.Handler(api)))
	t.Cleanup(srv.Close)
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	httpapitest.Run(t, srv.URL, nil, []httpapitest.Case{
		{Name: "wrong method", Method: "PUT", Path: "/v1/registry/token", Status: 405, Code: "method_not_allowed"},
		{Name: "malformed form", Method: "POST", Path: "/v1/registry/token", Body: "grant_type=%zz", Header: form, Status: 400, Code: "bad_request"},
		{Name: "unknown grant", Method: "POST", Path: "/v1/registry/token", Body: "grant_type=refresh_token", Header: form, Status: 400, Code: "bad_request"},
		{Name: "unknown service", Method: "GET", Path: "/v1/registry/token?service=other", Status: 400, Code: "bad_request"},
		{Name: "oversized body", Method: "POST", Path: "/v1/registry/token", Body: "grant_type=password&password=" + strings.Repeat("x", 64<<10), Header: form, Status: 413, Code: "too_large"},
		{Name: "no credentials", Method: "GET", Path: "/v1/registry/token?service=zeitwork-registry", Status: 401, Code: "unauthorized"},
		{Name: "forged credentials", Method: "GET", Path: "/v1/registry/token", Header: http.Header{"Authorization": {"Basic cHJvamVjdC14OnNlY3JldA=="}}, Status: 401, Code: "unauthorized"},
	})
	resp, err := http.Post(srv.URL+"/v1/registry/token", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusMethodNotAllowed {
		t.Fatal("POST is refused")
	}
	req, _ := http.NewRequest("DELETE", srv.URL+"/v1/registry/token", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Allow"); got != "GET, POST" {
		t.Fatalf("Allow %q, want GET, POST", got)
	}
}
