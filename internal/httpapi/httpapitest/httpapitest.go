// Package httpapitest checks that an API tells every failure the same way
// (internal/httpapi): the right status, a JSON body {error, code,
// request_id}, Allow on a 405, and no cause in a 5xx body.
package httpapitest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi"
)

// Case is one bad request and what the API must answer.
type Case struct {
	Name         string
	Method, Path string
	Body         string
	Header       http.Header // added to the request
	Status       int
	Code         string // the body's code
	// Hidden are texts of the cause that must not appear in the body.
	Hidden []string
}

// Oversized is a JSON body larger than httpapi.MaxBody.
func Oversized() string {
	return `{"padding": "` + strings.Repeat("x", httpapi.MaxBody) + `"}`
}

// Run sends each case to base with header and checks the answer.
func Run(t *testing.T, base string, header http.Header, cases []Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			req, err := http.NewRequest(tc.Method, base+tc.Path, strings.NewReader(tc.Body))
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range header {
				req.Header[k] = vs
			}
			for k, vs := range tc.Header {
				req.Header[k] = vs
			}
			if tc.Body != "" && req.Header.Get("Content-Type") == "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			Check(t, resp, raw, tc.Status, tc.Code, tc.Hidden...)
		})
	}
}

// Check checks one error answer.
func Check(t *testing.T, resp *http.Response, raw []byte, status int, code string, hidden ...string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, raw)
	}
	for k := range fields {
		if k != "error" && k != "code" && k != "request_id" {
			t.Errorf("body has field %q beyond error, code, request_id: %s", k, raw)
		}
	}
	var body httpapi.ErrorBody
	_ = json.Unmarshal(raw, &body)
	if body.Error == "" || body.Code != code || body.RequestID == "" || body.RequestID != resp.Header.Get("X-Request-Id") {
		t.Errorf("body %s, want an error, code %q and the X-Request-Id", raw, code)
	}
	if status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
		t.Error("405 without an Allow header")
	}
	if status >= 500 {
		if code == "internal" && body.Error != "internal error" {
			t.Errorf("500 says %q, want the opaque %q", body.Error, "internal error")
		}
		for _, h := range hidden {
			if strings.Contains(strings.ToLower(string(raw)), strings.ToLower(h)) {
				t.Errorf("5xx body shows the cause (%q): %s", h, raw)
			}
		}
	}
}
