package account_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func devices(t *testing.T) (account.Store, account.Devices, *clock) {
	t.Helper()
	pool := testdb.New(t)
	c := &clock{now: time.Now().Truncate(time.Microsecond)} // Postgres keeps microseconds
	return account.Store{DB: pool}, account.Devices{DB: pool, Now: c.Now}, c
}

var userCodeRe = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

func TestDeviceSignInYieldsOneToken(t *testing.T) {
	ctx := context.Background()
	s, d, c := devices(t)
	alice, _, err := s.SignIn(ctx, profile(1, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	code, err := d.Start(ctx, "  laptop  ")
	if err != nil {
		t.Fatal(err)
	}
	if !userCodeRe.MatchString(code.UserCode) || code.Interval != 5*time.Second || code.ExpiresAt.Sub(c.Now()) != 15*time.Minute {
		t.Fatalf("started %+v", code)
	}
	if _, err := d.Poll(ctx, code.DeviceCode); !errors.Is(err, account.ErrAuthorizationPending) {
		t.Fatalf("first poll: %v", err)
	}
	if _, err := d.Poll(ctx, code.DeviceCode); !errors.Is(err, account.ErrSlowDown) {
		t.Fatalf("poll at once: %v", err)
	}

	// Typed the way people type it.
	typed := strings.ToLower(strings.ReplaceAll(code.UserCode, "-", " "))
	pending, err := d.Pending(ctx, typed)
	if err != nil || pending.ClientName != "laptop" || pending.UserCode != code.UserCode {
		t.Fatalf("Pending(%q) = %+v, %v", typed, pending, err)
	}
	if err := d.Approve(ctx, alice.ID, typed); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pending(ctx, code.UserCode); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("pending after approval: %v", err)
	}
	if err := d.Deny(ctx, alice.ID, code.UserCode); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("deny after approval: %v", err)
	}

	// Still too soon after the last poll, approved or not.
	c.Add(4 * time.Second)
	if _, err := d.Poll(ctx, code.DeviceCode); !errors.Is(err, account.ErrSlowDown) {
		t.Fatalf("poll 4s later: %v", err)
	}
	c.Add(5 * time.Second)
	tok, err := d.Poll(ctx, code.DeviceCode)
	if err != nil || tok.Name != "laptop" || !strings.HasPrefix(tok.Secret, account.TokenPrefix) {
		t.Fatalf("poll after approval: %+v, %v", tok, err)
	}
	if p, err := s.Bearer(ctx, tok.Secret); err != nil || p.UserID != alice.ID || p.TokenID != tok.ID {
		t.Fatalf("the token: %+v, %v", p, err)
	}
	c.Add(time.Minute)
	if _, err := d.Poll(ctx, code.DeviceCode); !errors.Is(err, account.ErrExpiredToken) {
		t.Fatalf("second collection: %v", err)
	}
	if list, _ := s.Tokens(ctx, alice.ID, [16]byte{}, 100); len(list) != 1 {
		t.Fatalf("%d tokens", len(list))
	}
}

func TestDeviceSignInDeniedExpiredAndUnknown(t *testing.T) {
	ctx := context.Background()
	s, d, c := devices(t)
	alice, _, _ := s.SignIn(ctx, profile(1, "alice"))

	denied, _ := d.Start(ctx, "ci")
	if err := d.Deny(ctx, alice.ID, denied.UserCode); err != nil {
		t.Fatal(err)
	}
	if err := d.Approve(ctx, alice.ID, denied.UserCode); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("approve after deny: %v", err)
	}
	if _, err := d.Poll(ctx, denied.DeviceCode); !errors.Is(err, account.ErrAccessDenied) {
		t.Fatalf("poll after deny: %v", err)
	}

	expired, _ := d.Start(ctx, "old")
	c.Add(15 * time.Minute)
	if _, err := d.Pending(ctx, expired.UserCode); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("pending after expiry: %v", err)
	}
	if err := d.Approve(ctx, alice.ID, expired.UserCode); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("approve after expiry: %v", err)
	}
	if _, err := d.Poll(ctx, expired.DeviceCode); !errors.Is(err, account.ErrExpiredToken) {
		t.Fatalf("poll after expiry: %v", err)
	}
	// Pruned once expired; then the code is unknown.
	c.Add(time.Second)
	if n, err := d.Prune(ctx, c.Now()); err != nil || n != 2 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if _, err := d.Poll(ctx, expired.DeviceCode); !errors.Is(err, account.ErrInvalidGrant) {
		t.Fatalf("poll after prune: %v", err)
	}

	for _, bad := range []string{"", "zw_x", strings.Repeat("A", 43), "not a code"} {
		if _, err := d.Poll(ctx, bad); !errors.Is(err, account.ErrInvalidGrant) {
			t.Errorf("poll %q: %v", bad, err)
		}
	}
	for _, bad := range []string{"", "BCDF-GHJ", "BCDF-GHJKL", "AEIO-U123", "BCDF-GHJK'; --", "ΒCDF-GHJK"} {
		if _, err := d.Pending(ctx, bad); !errors.Is(err, account.ErrNotFound) {
			t.Errorf("pending %q: %v", bad, err)
		}
		if err := d.Approve(ctx, alice.ID, bad); !errors.Is(err, account.ErrNotFound) {
			t.Errorf("approve %q: %v", bad, err)
		}
	}
	for _, bad := range []string{"", "   ", strings.Repeat("x", 101), "line\nbreak"} {
		if _, err := d.Start(ctx, bad); !errors.Is(err, account.ErrInvalid) {
			t.Errorf("start %q: %v", bad, err)
		}
	}
}

// Two polls racing after approval: one gets the token, the other is told
// the code is spent (or to slow down), never a second token.
func TestConcurrentPollsCollectOneToken(t *testing.T) {
	ctx := context.Background()
	s, d, _ := devices(t)
	alice, _, _ := s.SignIn(ctx, profile(1, "alice"))
	code, _ := d.Start(ctx, "laptop")
	if err := d.Approve(ctx, alice.ID, code.UserCode); err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Poll(ctx, code.DeviceCode)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				tokens++
			case !errors.Is(err, account.ErrExpiredToken) && !errors.Is(err, account.ErrSlowDown):
				t.Errorf("poll: %v", err)
			}
		}()
	}
	wg.Wait()
	if tokens != 1 {
		t.Fatalf("%d tokens collected", tokens)
	}
}
