package httpapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

type createReq struct {
	Name     string `json:"name"`
	Replicas int    `json:"replicas"`
}

func server() http.Handler {
	s := httpapi.Server{Log: zlog.Discard()}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/things", s.Handle(func(w http.ResponseWriter, r *http.Request) error {
		var req createReq
		if err := httpapi.Decode(r, &req); err != nil {
			return err
		}
		if req.Replicas < 3 {
			return httpapi.Invalid("replicas must be at least 3, got %d", req.Replicas)
		}
		httpapi.WriteJSON(w, http.StatusCreated, req)
		return nil
	}))
	mux.Handle("GET /v1/boom", s.Handle(func(http.ResponseWriter, *http.Request) error {
		return errors.New("database password is hunter2") // a cause never shown
	}))
	mux.Handle("GET /v1/panic", s.Handle(func(http.ResponseWriter, *http.Request) error {
		panic("handler bug")
	}))
	mux.Handle("GET /v1/secret", s.RequireToken("cluster-token", s.Handle(func(w http.ResponseWriter, _ *http.Request) error {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
		return nil
	})))
	return s.Router(mux)
}

func do(t *testing.T, method, path, body string, header ...string) (int, httpapi.ErrorBody, *httptest.ResponseRecorder) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	server().ServeHTTP(rec, req)
	var eb httpapi.ErrorBody
	if rec.Code >= 400 {
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: error with Content-Type %q", method, path, ct)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Code == "" {
			t.Fatalf("%s %s: error body %q is not an ErrorBody", method, path, rec.Body.String())
		}
		if eb.RequestID == "" || eb.RequestID != rec.Header().Get("X-Request-Id") {
			t.Fatalf("request id %q vs header %q", eb.RequestID, rec.Header().Get("X-Request-Id"))
		}
	}
	return rec.Code, eb, rec
}

func TestBadBodiesAreClear400s(t *testing.T) {
	for _, tc := range []struct {
		body, want string
		status     int
	}{
		{``, "body is empty", 400},
		{`{"name": "x",`, "not valid JSON", 400},
		{`{"name": 5}`, `field "name" must be string`, 400},
		{`{"name": "x", "replicas": 3, "color": "red"}`, `unknown field "color"`, 400},
		{`{"name": "x", "replicas": 3} {"again": 1}`, "single JSON object", 400},
		{`{"name": "x", "replicas": 1}`, "replicas must be at least 3, got 1", 422},
		{`{"name": "` + strings.Repeat("a", httpapi.MaxBody) + `"}`, "larger than", 413},
	} {
		code, eb, _ := do(t, "POST", "/v1/things", tc.body)
		if code != tc.status || !strings.Contains(eb.Error, tc.want) {
			t.Errorf("body %.40q: %d %q, want %d containing %q", tc.body, code, eb.Error, tc.status, tc.want)
		}
	}
	if code, eb, _ := do(t, "POST", "/v1/things", `name=x`, "Content-Type", "application/x-www-form-urlencoded"); code != 415 {
		t.Errorf("form body: %d %+v, want 415", code, eb)
	}
	code, _, rec := do(t, "POST", "/v1/things", `{"name": "x", "replicas": 3}`)
	if code != 201 || !strings.Contains(rec.Body.String(), `"name":"x"`) {
		t.Fatalf("good body: %d %s", code, rec.Body.String())
	}
}

func TestInternalErrorsAndPanicsAreOpaque500s(t *testing.T) {
	code, eb, _ := do(t, "GET", "/v1/boom", "")
	if code != 500 || eb.Error != "internal error" || strings.Contains(eb.Error, "hunter2") {
		t.Fatalf("error: %d %+v", code, eb)
	}
	code, eb, _ = do(t, "GET", "/v1/panic", "")
	if code != 500 || eb.Code != "internal" {
		t.Fatalf("panic: %d %+v", code, eb)
	}
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	if code, eb, _ := do(t, "GET", "/v1/nothing-here", ""); code != 404 || !strings.Contains(eb.Error, "no route for GET /v1/nothing-here") {
		t.Fatalf("unknown path: %d %+v", code, eb)
	}
	code, eb, rec := do(t, "DELETE", "/v1/things", "")
	if code != 405 || rec.Header().Get("Allow") == "" || !strings.Contains(eb.Error, "DELETE is not allowed") {
		t.Fatalf("wrong method: %d %+v allow=%q", code, eb, rec.Header().Get("Allow"))
	}
}

func TestTokenIsRequired(t *testing.T) {
	for _, auth := range []string{"", "Bearer wrong", "cluster-token", "Bearer cluster-token "} {
		code, eb, rec := do(t, "GET", "/v1/secret", "", "Authorization", auth)
		if code != 401 || eb.Code != "unauthorized" || rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: %d %+v", auth, code, eb)
		}
	}
	if code, _, _ := do(t, "GET", "/v1/secret", "", "Authorization", "Bearer cluster-token"); code != 200 {
		t.Fatalf("right token: %d", code)
	}
}

func TestRequestIDIsKeptWhenSaneAndReplacedOtherwise(t *testing.T) {
	_, eb, _ := do(t, "GET", "/v1/nothing", "", "X-Request-Id", "abc-123")
	if eb.RequestID != "abc-123" {
		t.Fatalf("sane id replaced: %q", eb.RequestID)
	}
	_, eb, _ = do(t, "GET", "/v1/nothing", "", "X-Request-Id", "evil\x01"+strings.Repeat("x", 100))
	if eb.RequestID == "" || strings.Contains(eb.RequestID, "evil") {
		t.Fatalf("insane id kept: %q", eb.RequestID)
	}
}
