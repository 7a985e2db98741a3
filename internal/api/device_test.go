package api

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/ratelimit"
)

// testClock is the one clock of a test's API processes and its limiter.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// withClock gives e's API a settable clock for device sign-ins and limits
// (the zero Limit values are off; tests set the ones they look at).
func (e *env) withClock(limits Limits) *testClock {
	e.t.Helper()
	// Inside a minute and an hour, so that windows do not turn over by
	// themselves; Postgres keeps microseconds.
	c := &testClock{now: time.Date(2031, 3, 4, 10, 0, 1, 0, time.UTC)}
	e.api.Devices = account.Devices{DB: e.api.Accounts.DB, Now: c.Now}
	limits.Limiter = &ratelimit.Limiter{DB: e.api.Accounts.DB, Now: c.Now}
	e.api.Limits = limits
	e.handler, e.routes = e.api.build()
	return c
}

type deviceStart struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

func (e *env) startDevice(name string) deviceStart {
	e.t.Helper()
	res := e.do("POST", "/v1/auth/device", `{"client_name":"`+name+`"}`)
	if res.Code != http.StatusOK {
		e.t.Fatalf("POST /v1/auth/device: %d %s", res.Code, res.body)
	}
	var s deviceStart
	res.decode(e.t, &s)
	return s
}

// wantDeviceError polls and expects RFC 8628's code in a 400 problem.
func (e *env) wantDeviceError(deviceCode, code string) {
	e.t.Helper()
	res := e.do("POST", "/v1/auth/device/token", `{"device_code":"`+deviceCode+`"}`)
	e.wantProblem(res, http.StatusBadRequest)
	var body struct {
		Error string `json:"error"`
	}
	res.decode(e.t, &body)
	if body.Error != code {
		e.t.Fatalf("poll: error %q, want %q: %s", body.Error, code, res.body)
	}
}

func TestDeviceSignIn(t *testing.T) {
	e := newEnv(t)
	c := e.withClock(Limits{})
	alice := e.signIn(1, "alice")

	s := e.startDevice("zeitwork CLI on laptop")
	if len(s.UserCode) != 9 || s.Interval != 5 || s.ExpiresIn != 900 || s.DeviceCode == "" ||
		s.VerificationURI != "https://example.com/device" || s.VerificationURIComplete != s.VerificationURI+"?user_code="+s.UserCode {
		t.Fatalf("started %+v", s)
	}
	e.wantDeviceError(s.DeviceCode, "authorization_pending")
	e.wantDeviceError(s.DeviceCode, "slow_down")

	// What alice is about to approve, typed loosely.
	typed := strings.ToLower(strings.ReplaceAll(s.UserCode, "-", ""))
	res := e.do("GET", "/v1/auth/device?user_code="+typed, "", session(alice)...)
	var shown DeviceSignIn
	res.decode(t, &shown)
	if res.Code != http.StatusOK || shown.ClientName != "zeitwork CLI on laptop" || shown.UserCode != s.UserCode || shown.CreatedAt.IsZero() {
		t.Fatalf("GET: %d %s", res.Code, res.body)
	}
	if res := e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+typed+`"}`, session(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("approve: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+s.UserCode+`"}`, session(alice)...), http.StatusNotFound)
	e.wantProblem(e.do("GET", "/v1/auth/device?user_code="+s.UserCode, "", session(alice)...), http.StatusNotFound)

	c.Add(5 * time.Second)
	res = e.do("POST", "/v1/auth/device/token", `{"device_code":"`+s.DeviceCode+`"}`)
	var got struct {
		Token
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	res.decode(t, &got)
	if res.Code != http.StatusOK || got.TokenType != "Bearer" || !strings.HasPrefix(got.AccessToken, "zw_") || got.Name != "zeitwork CLI on laptop" ||
		res.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("collect: %d %v %s", res.Code, res.Header(), res.body)
	}
	var me User
	if res := e.do("GET", "/v1/me", "", "Authorization", "Bearer "+got.AccessToken); res.Code != http.StatusOK {
		t.Fatalf("the device's token: %d %s", res.Code, res.body)
	} else if res.decode(t, &me); me.ID != alice.ID {
		t.Fatalf("the device is %+v", me)
	}
	// One token per device code, however patient the second poll.
	c.Add(time.Minute)
	e.wantDeviceError(s.DeviceCode, "expired_token")
	if n := e.count(`SELECT count(*) FROM api_tokens WHERE name = 'zeitwork CLI on laptop'`); n != 1 {
		t.Fatalf("%d device tokens", n)
	}

	// Denied.
	d := e.startDevice("ci")
	if res := e.do("POST", "/v1/auth/device/deny", `{"user_code":"`+d.UserCode+`"}`, bearer(alice)...); res.Code != http.StatusNoContent {
		t.Fatalf("deny: %d %s", res.Code, res.body)
	}
	e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+d.UserCode+`"}`, session(alice)...), http.StatusNotFound)
	e.wantDeviceError(d.DeviceCode, "access_denied")

	// Expired: neither approved nor collected.
	x := e.startDevice("slow")
	c.Add(15 * time.Minute)
	e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+x.UserCode+`"}`, session(alice)...), http.StatusNotFound)
	e.wantDeviceError(x.DeviceCode, "expired_token")

	// Wrong and unknown codes; malformed bodies.
	e.wantDeviceError(strings.Repeat("A", 43), "invalid_grant")
	e.wantDeviceError("zw_not-a-device-code", "invalid_grant")
	for _, code := range []string{"BCDF-GHJK", "AAAA-AAAA", "x", "'; DROP --"} {
		e.wantProblem(e.do("GET", "/v1/auth/device?user_code="+strings.ReplaceAll(code, " ", "+"), "", session(alice)...), http.StatusNotFound)
		e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+code+`"}`, session(alice)...), http.StatusNotFound)
		e.wantProblem(e.do("POST", "/v1/auth/device/deny", `{"user_code":"`+code+`"}`, session(alice)...), http.StatusNotFound)
	}
	for _, body := range []string{`{}`, `{"client_name":""}`, `{"client_name":"` + strings.Repeat("x", 101) + `"}`, `{"client_name":"a","x":1}`, `{"client_name":"   "}`} {
		res := e.do("POST", "/v1/auth/device", body)
		if res.Code != http.StatusUnprocessableEntity {
			t.Errorf("start %s: %d %s", body, res.Code, res.body)
		}
	}
	e.wantProblem(e.do("POST", "/v1/auth/device/token", `{}`), http.StatusUnprocessableEntity)
	e.wantProblem(e.do("GET", "/v1/auth/device", "", session(alice)...), http.StatusUnprocessableEntity)
}

// Any admitted user may approve a code they were shown (that is how the
// device reaches their account); a user still on the waitlist may not.
func TestDeviceApprovalNeedsAnAdmittedUser(t *testing.T) {
	e := newEnv(t)
	e.withClock(Limits{})
	e.signIn(1, "admin") // the first user is admitted; the next waits
	_, sess, err := e.api.Accounts.SignIn(t.Context(), account.Profile{GitHubUserID: 2, Login: "waiting", Email: "w@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	waiting := []string{"Cookie", SessionCookie + "=" + sess.Token}
	s := e.startDevice("laptop")
	e.wantProblem(e.do("GET", "/v1/auth/device?user_code="+s.UserCode, "", waiting...), http.StatusForbidden)
	e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+s.UserCode+`"}`, waiting...), http.StatusForbidden)
	e.wantProblem(e.do("POST", "/v1/auth/device/deny", `{"user_code":"`+s.UserCode+`"}`, waiting...), http.StatusForbidden)
	e.wantProblem(e.do("POST", "/v1/auth/device/approve", `{"user_code":"`+s.UserCode+`"}`), http.StatusUnauthorized)
	e.wantDeviceError(s.DeviceCode, "authorization_pending")
}

func TestDeviceVerificationURI(t *testing.T) {
	e := newEnv(t)
	e.api.DeviceVerificationURL = "https://dashboard.example/device"
	e.handler, e.routes = e.api.build()
	if s := e.startDevice("x"); s.VerificationURI != "https://dashboard.example/device" || !strings.HasSuffix(s.VerificationURIComplete, "/device?user_code="+s.UserCode) {
		t.Fatalf("%+v", s)
	}
	if got := (&API{Dev: true}).verificationURI(client{host: "localhost:8080"}); got != "http://localhost:8080/device" {
		t.Fatalf("dev: %s", got)
	}
}

// doFrom sends a request from remote (host:port) through h.
func doFrom(t *testing.T, h http.Handler, remote, method, path, body string, header ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{rec, rec.Body.String()}
}

func (e *env) wantTooMany(res response, retryAfter string) {
	e.t.Helper()
	e.wantProblem(res, http.StatusTooManyRequests)
	if got := res.Header().Get("Retry-After"); got != retryAfter {
		e.t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t)
	c := e.withClock(Limits{
		SignIn:      ratelimit.Limit{Max: 2, Per: time.Minute},
		Tokens:      ratelimit.Limit{Max: 2, Per: time.Hour},
		DeviceCodes: ratelimit.Limit{Max: 2, Per: time.Hour},
	})
	alice, bob := e.signIn(1, "alice"), e.signIn(2, "bob")
	// A second API process on the same database, with the same limits.
	other := *e.api
	h2, _ := other.build()
	const ip, ip2 = "198.51.100.7:1000", "198.51.100.8:1000"

	// Sign-in: per address; start and callback each have their count.
	for _, h := range []http.Handler{e.handler, h2} {
		if res := doFrom(t, h, ip, "GET", "/v1/auth/github", ""); res.Code != http.StatusFound {
			t.Fatalf("start: %d %s", res.Code, res.body)
		}
	}
	e.wantTooMany(doFrom(t, e.handler, ip, "GET", "/v1/auth/github", ""), "59")
	e.wantTooMany(doFrom(t, h2, ip, "GET", "/v1/auth/github", ""), "59")
	if res := doFrom(t, h2, ip2, "GET", "/v1/auth/github", ""); res.Code != http.StatusFound {
		t.Fatalf("another address: %d %s", res.Code, res.body)
	}
	for range 2 {
		if res := doFrom(t, e.handler, ip, "GET", "/v1/auth/github/callback?code=c&state=s", ""); res.Code != http.StatusBadRequest {
			t.Fatalf("callback: %d %s", res.Code, res.body)
		}
	}
	e.wantTooMany(doFrom(t, h2, ip, "GET", "/v1/auth/github/callback?code=c&state=s", ""), "59")

	// Tokens: per user, whichever credential and process.
	for i, h := range []http.Handler{e.handler, h2} {
		if res := doFrom(t, h, ip, "POST", "/v1/tokens", `{"name":"t"}`, bearer(alice)...); res.Code != http.StatusCreated {
			t.Fatalf("token %d: %d %s", i, res.Code, res.body)
		}
	}
	e.wantTooMany(doFrom(t, h2, ip2, "POST", "/v1/tokens", `{"name":"t"}`, session(alice)...), "3599")
	if res := doFrom(t, h2, ip, "POST", "/v1/tokens", `{"name":"t"}`, bearer(bob)...); res.Code != http.StatusCreated {
		t.Fatalf("bob's token: %d %s", res.Code, res.body)
	}

	// Device codes: per address.
	for range 2 {
		if res := doFrom(t, h2, ip, "POST", "/v1/auth/device", `{"client_name":"x"}`); res.Code != http.StatusOK {
			t.Fatalf("device: %d %s", res.Code, res.body)
		}
	}
	before := e.count(`SELECT count(*) FROM device_authorizations`)
	e.wantTooMany(doFrom(t, e.handler, ip, "POST", "/v1/auth/device", `{"client_name":"x"}`), "3599")
	if n := e.count(`SELECT count(*) FROM device_authorizations`); n != before {
		t.Fatalf("a refused request wrote a device code")
	}

	// The next window lets everyone in again.
	c.Add(time.Minute)
	if res := doFrom(t, h2, ip, "GET", "/v1/auth/github", ""); res.Code != http.StatusFound {
		t.Fatalf("start next minute: %d %s", res.Code, res.body)
	}
	e.wantTooMany(doFrom(t, e.handler, ip2, "POST", "/v1/tokens", `{"name":"t"}`, bearer(alice)...), "3539")
	c.Add(time.Hour)
	if res := doFrom(t, e.handler, ip, "POST", "/v1/tokens", `{"name":"t"}`, bearer(alice)...); res.Code != http.StatusCreated {
		t.Fatalf("token next hour: %d %s", res.Code, res.body)
	}
	if res := doFrom(t, e.handler, ip, "POST", "/v1/auth/device", `{"client_name":"x"}`); res.Code != http.StatusOK {
		t.Fatalf("device next hour: %d %s", res.Code, res.body)
	}
}

// Only a trusted proxy's X-Forwarded-For is believed, and only its last
// hops: what a client writes itself is further left.
func TestClientAddress(t *testing.T) {
	a := &API{Limits: Limits{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}}
	for _, tc := range []struct {
		remote    string
		forwarded []string
		want      string
	}{
		{"203.0.113.9:4000", nil, "203.0.113.9"},
		{"203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"}, // not a proxy: its header is ignored
		{"10.0.0.2:4000", []string{"1.2.3.4", "198.51.100.1"}, "198.51.100.1"},
		{"10.0.0.2:4000", []string{"198.51.100.1", "10.0.0.3"}, "198.51.100.1"}, // two proxies
		{"10.0.0.2:4000", []string{"10.0.0.4", "10.0.0.3"}, "10.0.0.4"},
		{"10.0.0.2:4000", []string{"1.2.3.4", "garbage"}, "10.0.0.2"},
		{"10.0.0.2:4000", nil, "10.0.0.2"},
		{"[fd00::1]:4000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"[::ffff:10.0.0.2]:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"pipe", nil, "invalid IP"},
	} {
		if got := a.clientIP(client{remote: tc.remote, forwarded: tc.forwarded}).String(); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.remote, tc.forwarded, got, tc.want)
		}
	}
}

// The header reaches the limiter through huma's resolver.
func TestForwardedForIsReadFromTrustedProxies(t *testing.T) {
	e := newEnv(t)
	e.withClock(Limits{SignIn: ratelimit.Limit{Max: 1, Per: time.Minute}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	const proxy = "10.1.2.3:5555"
	if res := doFrom(t, e.handler, proxy, "GET", "/v1/auth/github", "", "X-Forwarded-For", "198.51.100.1"); res.Code != http.StatusFound {
		t.Fatalf("%d %s", res.Code, res.body)
	}
	// Another client behind the same proxy has its own count.
	if res := doFrom(t, e.handler, proxy, "GET", "/v1/auth/github", "", "X-Forwarded-For", "198.51.100.2"); res.Code != http.StatusFound {
		t.Fatalf("%d %s", res.Code, res.body)
	}
	// A client cannot escape its count by claiming another address.
	e.wantTooMany(doFrom(t, e.handler, proxy, "GET", "/v1/auth/github", "", "X-Forwarded-For", "6.6.6.6, 198.51.100.1"), "59")
	e.wantTooMany(doFrom(t, e.handler, proxy, "GET", "/v1/auth/github", "", "X-Forwarded-For", "6.6.6.7", "X-Forwarded-For", "198.51.100.1"), "59")
	// Without a trusted proxy in front, the header is the client's word.
	if res := doFrom(t, e.handler, "198.51.100.9:1", "GET", "/v1/auth/github", "", "X-Forwarded-For", "198.51.100.1"); res.Code != http.StatusFound {
		t.Fatalf("%d %s", res.Code, res.body)
	}
}
