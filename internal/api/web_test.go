package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestWebServesTheDashboardBesideTheAPI: files of the bundle, index.html
// for the dashboard's own routes, and /v1 left to the API with its
// problem+json answers.
func TestWebServesTheDashboardBesideTheAPI(t *testing.T) {
	bundle := fstest.MapFS{
		"index.html":               {Data: []byte("<!doctype html><title>dashboard</title>")},
		"_nuxt/entry.abc123.js":    {Data: []byte("console.log(1)")},
		"favicon.ico":              {Data: []byte("icon")},
		"settings/index.html":      {Data: []byte("settings page")},
		"_nuxt/builds/meta/x.json": {Data: []byte("{}")},
	}
	h := Web((&API{Log: zlog.Discard()}).Handler(), bundle)

	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string // prefix
		body         string // substring
		cache        string
	}{
		{"GET", "/", 200, "text/html", "dashboard", "no-cache"},
		{"HEAD", "/", 200, "text/html", "", "no-cache"},
		{"GET", "/projects/0190c6b2-0000-7000-8000-000000000000", 200, "text/html", "dashboard", "no-cache"},
		{"GET", "/index.html", 200, "text/html", "dashboard", "no-cache"},
		{"GET", "/settings", 200, "text/html", "settings page", "no-cache"},
		{"GET", "/_nuxt/entry.abc123.js", 200, "text/javascript", "console.log", "public, max-age=31536000, immutable"},
		{"GET", "/favicon.ico", 200, "", "icon", "no-cache"},
		// An asset the bundle does not have is a 404, never HTML in a script's place.
		{"GET", "/_nuxt/entry.old.js", 404, "text/plain", "", ""},
		// Paths cannot climb out of the bundle.
		{"GET", "/../../etc/passwd", 200, "text/html", "dashboard", "no-cache"},
		// /v1 stays the API's.
		{"GET", "/v1/health", 200, "application/json", `"status":"ok"`, ""},
		{"GET", "/v1/nope", 404, "application/problem+json", "no route for GET /v1/nope", ""},
		{"GET", "/v1", 404, "application/problem+json", "no route", ""},
		{"POST", "/projects", 404, "application/problem+json", "no route for POST /projects", ""},
		{"DELETE", "/", 404, "application/problem+json", "no route", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, "/", nil)
			req.URL.Path = tc.path
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want %q…", ct, tc.contentType)
			}
			if !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("body %q does not contain %q", rec.Body, tc.body)
			}
			if got := rec.Header().Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if !strings.HasPrefix(tc.path, "/v1") && tc.method != "POST" && tc.method != "DELETE" {
				if got := rec.Header().Get("Content-Security-Policy"); got != "frame-ancestors 'none'" {
					t.Errorf("Content-Security-Policy %q", got)
				}
			}
		})
	}
}

// TestWebWithoutABuiltBundle: an empty directory (nothing built) answers a
// clear 404, not a directory listing or a 500.
func TestWebWithoutABuiltBundle(t *testing.T) {
	h := Web((&API{Log: zlog.Discard()}).Handler(), fstest.MapFS{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), "the dashboard is not built") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
