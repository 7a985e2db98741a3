package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Handshakes with names nobody verified cannot drive database queries: a
// refused name is not asked about again for a while, and random names
// reach the decision (the query) at most at the configured rate. The
// clock is frozen, so the bound is exact: Burst queries, then one more per
// second of clock.
func TestHandshakesWithRandomNamesAreBoundedQueries(t *testing.T) {
	var queries atomic.Int64
	const burst = 10
	m, err := New(config.ACME{Directory: "https://ca.invalid/dir"}, nil, zlog.Discard(), Options{
		HTTPAddr: ":80", PlatformDomains: []string{"zeitwork.app"},
		Allow: func(_ context.Context, name string) error {
			queries.Add(1) // stands for VerifiedDomains' query
			return fmt.Errorf("%s: %w", name, ErrUnknownName)
		},
		Limits: DecisionLimits{Rate: 1, Burst: burst, NegativeTTL: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock sync.Mutex
	m.allow.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }

	l, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	handshake := func(name string) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.Addr().String(),
			&tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec // no certificate is expected at all
		if err == nil {
			c.Close()
		}
		return err
	}

	// One name again and again: asked once.
	for range 50 {
		if handshake("nope.customer.test") == nil {
			t.Fatal("a handshake for a refused name succeeded")
		}
	}
	if n := queries.Load(); n != 1 {
		t.Fatalf("50 handshakes for one refused name: %d queries, want 1", n)
	}

	// Random names: Burst queries in all, however many handshakes.
	const handshakes = 300
	for range handshakes {
		if handshake(randomName()) == nil {
			t.Fatal("a handshake for a random name succeeded")
		}
	}
	if n := queries.Load(); n != burst {
		t.Fatalf("%d handshakes with random names: %d queries, want at most %d", handshakes, n, burst)
	}
	// Refused for being too many, not for what the database said.
	if err := m.decide(context.Background(), randomName()); !errors.Is(err, ErrBusy) {
		t.Fatalf("decide beyond the rate = %v, want ErrBusy", err)
	}
	// The bucket refills at the rate: a second later, one more.
	clock.Lock()
	now = now.Add(time.Second)
	clock.Unlock()
	for range 20 {
		handshake(randomName())
	}
	if n := queries.Load(); n != burst+1 {
		t.Fatalf("a second later: %d queries, want %d", n, burst+1)
	}
	// The remembered refusal ends after NegativeTTL.
	clock.Lock()
	now = now.Add(2 * time.Minute)
	clock.Unlock()
	handshake("nope.customer.test")
	if n := queries.Load(); n != burst+2 {
		t.Fatalf("after the negative TTL: %d queries, want %d", n, burst+2)
	}
}

// ACME challenge lookups go to storage (the database) when the challenge
// was started elsewhere: TLS-ALPN-01 handshakes and HTTP-01 requests with
// random names must pass the same limited decision first. The manager has
// no database here, so a lookup that got through would fail the test.
func TestChallengeLookupsWithRandomNamesAreBounded(t *testing.T) {
	var queries atomic.Int64
	const burst = 5
	m, err := New(config.ACME{Directory: "https://ca.invalid/dir"}, nil, zlog.Discard(), Options{
		HTTPAddr: ":80", HTTPSAddr: ":443", PlatformDomains: []string{"zeitwork.app"},
		Allow: func(_ context.Context, name string) error {
			queries.Add(1)
			return fmt.Errorf("%s: %w", name, ErrUnknownName)
		},
		Limits: DecisionLimits{Rate: 1, Burst: burst},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.allow.now = func() time.Time { return now }

	for i := range 100 {
		name := randomName()
		if i%2 == 0 {
			name = hex.EncodeToString([]byte{byte(i)}) + ".zeitwork.app" // a platform name
		}
		hello := &tls.ClientHelloInfo{ServerName: name, SupportedProtos: []string{"acme-tls/1"}}
		if c, err := m.getCertificate(hello); err == nil || c != nil {
			t.Fatalf("TLS-ALPN challenge for %s answered", name)
		}
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := m.HTTPChallenge(next)
	for range 100 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/.well-known/acme-challenge/dGVzdHRva2Vu", nil)
		req.Host = randomName() + ":80"
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusTeapot {
			t.Fatalf("HTTP-01 challenge for %s: %d, want it passed on", req.Host, rec.Code)
		}
	}
	if n := queries.Load(); n != burst {
		t.Fatalf("200 challenge lookups with random names: %d queries, want %d", n, burst)
	}
}

// A database error is not an answer, and a pending domain may be verified
// any moment: neither is remembered.
func TestDecisionRemembersOnlyUnknownNames(t *testing.T) {
	for _, answer := range []error{errors.New("connection refused"), fmt.Errorf("pending.customer.test: %w", ErrNotVerified)} {
		calls := 0
		d := newLimitedDecision(func(context.Context, string) error {
			calls++
			return answer
		}, DecisionLimits{Rate: 1000, Burst: 1000})
		for range 3 {
			if err := d.decide(context.Background(), "pending.customer.test"); !errors.Is(err, answer) {
				t.Fatalf("decide = %v, want %v", err, answer)
			}
		}
		if calls != 3 {
			t.Fatalf("%v: %d calls, want 3", answer, calls)
		}
	}
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + ".customer.test"
}
