package account_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func profile(n int64, login string) account.Profile {
	return account.Profile{GitHubUserID: n, Login: login, Name: "Person " + login, Email: login + "@example.com", AvatarURL: "https://avatars.example/" + login}
}

func TestSignInCreatesUserOrganisationAndSession(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}

	first, sess, err := s.SignIn(ctx, profile(1, "Octocat"))
	if err != nil {
		t.Fatal(err)
	}
	if !first.Admin || first.Username != "Octocat" || first.Email != "Octocat@example.com" {
		t.Fatalf("first user: %+v", first)
	}
	if p, err := s.Session(ctx, sess.Token); err != nil || p.UserID != first.ID || p.SessionID != sess.ID {
		t.Fatalf("Session = %+v, %v", p, err)
	}
	orgs, err := db.New(pool).OrganisationListByUser(ctx, first.ID)
	if err != nil || len(orgs) != 1 || orgs[0].Slug != "octocat" {
		t.Fatalf("organisations: %+v, %v", orgs, err)
	}
	m, err := db.New(pool).OrganisationMemberGet(ctx, db.OrganisationMemberGetParams{OrganisationID: orgs[0].ID, UserID: first.ID})
	if err != nil || m.Role != "owner" {
		t.Fatalf("membership: %+v, %v", m, err)
	}

	// Signing in again refreshes the profile, keeps the user, and makes
	// no second organisation.
	p := profile(1, "octo-renamed")
	again, sess2, err := s.SignIn(ctx, p)
	if err != nil || again.ID != first.ID || again.Username != "octo-renamed" || !again.Admin || sess2.Token == sess.Token {
		t.Fatalf("second sign-in: %+v, %v", again, err)
	}
	if orgs, _ := db.New(pool).OrganisationListByUser(ctx, first.ID); len(orgs) != 1 {
		t.Fatalf("organisations after second sign-in: %+v", orgs)
	}

	// Someone else whose login is taken as an organisation slug (the
	// first user's old login) gets a numbered one, and is no admin.
	second, _, err := s.SignIn(ctx, profile(2, "octocat"))
	if err != nil || second.Admin || second.ID == first.ID {
		t.Fatalf("second user: %+v, %v", second, err)
	}
	if orgs, _ := db.New(pool).OrganisationListByUser(ctx, second.ID); len(orgs) != 1 || orgs[0].Slug != "octocat-2" {
		t.Fatalf("second user's organisations: %+v", orgs)
	}
}

func TestSignInRefusesProfilesWithoutIdentity(t *testing.T) {
	s := account.Store{DB: testdb.New(t)}
	for _, p := range []account.Profile{
		{GitHubUserID: 1, Login: "a"},                         // no verified e-mail
		{GitHubUserID: 0, Login: "a", Email: "a@example.com"}, // no GitHub id
		{GitHubUserID: 1, Email: "a@example.com"},             // no login
	} {
		if _, _, err := s.SignIn(context.Background(), p); !errors.Is(err, account.ErrInvalid) {
			t.Errorf("SignIn(%+v) = %v, want ErrInvalid", p, err)
		}
	}
}

// Two people signing in to a fresh install at once: exactly one of them
// is its first user.
func TestExactlyOneFirstAdmin(t *testing.T) {
	s := account.Store{DB: testdb.New(t)}
	const n = 6
	users := make([]account.User, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			users[i], _, errs[i] = s.SignIn(context.Background(), profile(int64(i+1), fmt.Sprintf("user%d", i)))
		})
	}
	wg.Wait()
	admins := 0
	for i, u := range users {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if u.Admin {
			admins++
		}
	}
	if admins != 1 {
		t.Fatalf("%d admins, want 1", admins)
	}
}

func TestSessionsEndWhenRevokedOrExpired(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}
	_, sess, err := s.SignIn(ctx, profile(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, sess.Token); !errors.Is(err, account.ErrUnauthenticated) {
		t.Fatalf("revoked session: %v", err)
	}

	_, sess, err = s.SignIn(ctx, profile(1, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, sess.Token); !errors.Is(err, account.ErrUnauthenticated) {
		t.Fatalf("expired session: %v", err)
	}

	for _, bad := range []string{"", "x", strings.Repeat("a", 43), sess.Token + "x", "zw_" + sess.Token} {
		if _, err := s.Session(ctx, bad); !errors.Is(err, account.ErrUnauthenticated) {
			t.Errorf("Session(%q) = %v", bad, err)
		}
	}
}

func TestSessionsAreListedAndRevokedByTheirOwnerOnly(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}
	alice, laptop, err := s.SignIn(ctx, profile(1, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	_, phone, _ := s.SignIn(ctx, profile(1, "alice"))
	_, gone, _ := s.SignIn(ctx, profile(1, "alice"))
	bob, bobs, _ := s.SignIn(ctx, profile(2, "bob"))
	if err := s.RevokeSession(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}

	list, err := s.Sessions(ctx, alice.ID, uuid.Nil, 10)
	if err != nil || len(list) != 2 || list[0].ID != laptop.ID || list[1].ID != phone.ID {
		t.Fatalf("Sessions = %+v, %v; want laptop and phone, not the revoked one", list, err)
	}
	if list[0].Token != "" || list[0].CreatedAt.IsZero() || list[0].ExpiresAt.IsZero() || list[0].LastSeenAt == nil {
		t.Fatalf("listed session %+v: want no token, created, expiry and last seen set", list[0])
	}
	if page, _ := s.Sessions(ctx, alice.ID, laptop.ID, 10); len(page) != 1 || page[0].ID != phone.ID {
		t.Fatalf("page after the first = %+v", page)
	}

	// Bob can neither revoke nor learn of alice's sessions.
	if err := s.RevokeOwnSession(ctx, bob.ID, phone.ID); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("bob revoking alice's session: %v", err)
	}
	if _, err := s.Session(ctx, phone.Token); err != nil {
		t.Fatalf("alice's phone after bob's attempt: %v", err)
	}
	if err := s.RevokeOwnSession(ctx, alice.ID, phone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, phone.Token); !errors.Is(err, account.ErrUnauthenticated) {
		t.Fatalf("revoked phone session: %v", err)
	}
	if err := s.RevokeOwnSession(ctx, alice.ID, phone.ID); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}
	if _, err := s.Session(ctx, laptop.Token); err != nil {
		t.Fatalf("the other session ended too: %v", err)
	}
	if list, _ := s.Sessions(ctx, bob.ID, uuid.Nil, 10); len(list) != 1 || list[0].ID != bobs.ID {
		t.Fatalf("bob's sessions = %+v", list)
	}
}

func TestSessionsKeepTheUserAgentAndWhenLastSeen(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}
	p := profile(1, "alice")
	p.UserAgent = "Mozilla/5.0 (X11) Firefox/140.0\x00\n\xff" + strings.Repeat("é", 200)
	alice, sess, err := s.SignIn(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.Sessions(ctx, alice.ID, uuid.Nil, 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("Sessions = %+v, %v", list, err)
	}
	ua := list[0].UserAgent
	if !strings.HasPrefix(ua, "Mozilla/5.0 (X11) Firefox/140.0é") || len(ua) > account.MaxUserAgent || !utf8.ValidString(ua) || strings.ContainsAny(ua, "\x00\n") {
		t.Fatalf("kept user agent %q (%d bytes): want it printable, valid UTF-8, at most %d bytes", ua, len(ua), account.MaxUserAgent)
	}
	// Seen: recorded at most once a minute.
	lastSeen := func() time.Time {
		t.Helper()
		var at time.Time
		if err := pool.QueryRow(ctx, "SELECT last_seen_at FROM sessions WHERE id = $1", sess.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	first := lastSeen()
	if _, err := s.Session(ctx, sess.Token); err != nil {
		t.Fatal(err)
	}
	if lastSeen() != first {
		t.Fatal("last_seen_at written again within the minute")
	}
	if _, err := pool.Exec(ctx, "UPDATE sessions SET last_seen_at = now() - interval '2 minutes' WHERE id = $1", sess.ID); err != nil {
		t.Fatal(err)
	}
	before := lastSeen()
	if _, err := s.Session(ctx, sess.Token); err != nil {
		t.Fatal(err)
	}
	if !lastSeen().After(before) {
		t.Fatal("last_seen_at not updated after a minute")
	}
	// Without a User-Agent: none kept.
	_, _, _ = s.SignIn(ctx, profile(1, "alice"))
	if list, _ := s.Sessions(ctx, alice.ID, uuid.Nil, 10); len(list) != 2 || list[1].UserAgent != "" {
		t.Fatalf("sessions %+v", list)
	}
}

func TestTokensAreShownOnceAndRevocable(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}
	alice, _, _ := s.SignIn(ctx, profile(1, "alice"))
	bob, _, _ := s.SignIn(ctx, profile(2, "bob"))

	tok, err := s.CreateToken(ctx, alice.ID, "  laptop ")
	if err != nil || !strings.HasPrefix(tok.Secret, account.TokenPrefix) || tok.Name != "laptop" {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	p, err := s.Bearer(ctx, tok.Secret)
	if err != nil || p.UserID != alice.ID || p.TokenID != tok.ID {
		t.Fatalf("Bearer = %+v, %v", p, err)
	}
	// Only the hash is stored.
	var stored []byte
	if err := pool.QueryRow(ctx, "SELECT token_hash FROM api_tokens WHERE id = $1", tok.ID).Scan(&stored); err != nil || strings.Contains(string(stored), strings.TrimPrefix(tok.Secret, "zw_")) || len(stored) != 32 {
		t.Fatalf("stored %x, %v", stored, err)
	}
	list, err := s.Tokens(ctx, alice.ID, uuid.Nil, 10)
	if err != nil || len(list) != 1 || list[0].Secret != "" || list[0].LastUsedAt == nil {
		t.Fatalf("Tokens = %+v, %v", list, err)
	}
	if list, _ := s.Tokens(ctx, bob.ID, uuid.Nil, 10); len(list) != 0 {
		t.Fatalf("bob sees %+v", list)
	}
	if err := s.RevokeToken(ctx, bob.ID, tok.ID); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("bob revoking alice's token: %v", err)
	}
	if err := s.RevokeToken(ctx, alice.ID, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bearer(ctx, tok.Secret); !errors.Is(err, account.ErrUnauthenticated) {
		t.Fatalf("revoked token: %v", err)
	}
	if err := s.RevokeToken(ctx, alice.ID, tok.ID); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}
	for _, name := range []string{"", "   ", strings.Repeat("n", 101)} {
		if _, err := s.CreateToken(ctx, alice.ID, name); !errors.Is(err, account.ErrInvalid) {
			t.Errorf("CreateToken(%q) = %v", name, err)
		}
	}
	for _, bad := range []string{"", "zw_", "Bearer x", tok.Secret[3:]} {
		if _, err := s.Bearer(ctx, bad); !errors.Is(err, account.ErrUnauthenticated) {
			t.Errorf("Bearer(%q) = %v", bad, err)
		}
	}
}

func TestTokenUseIsRecordedAtMostOnceAMinute(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	s := account.Store{DB: pool}
	alice, _, _ := s.SignIn(ctx, profile(1, "alice"))
	tok, err := s.CreateToken(ctx, alice.ID, "ci")
	if err != nil {
		t.Fatal(err)
	}
	lastUsed := func() time.Time {
		var at time.Time
		if err := pool.QueryRow(ctx, "SELECT last_used_at FROM api_tokens WHERE id = $1", tok.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	use := func() {
		if _, err := s.Bearer(ctx, tok.Secret); err != nil {
			t.Fatal(err)
		}
	}
	use()
	first := lastUsed()
	// Pretend the first use was 30 s ago: another use now writes nothing.
	if _, err := pool.Exec(ctx, "UPDATE api_tokens SET last_used_at = last_used_at - interval '30 seconds' WHERE id = $1", tok.ID); err != nil {
		t.Fatal(err)
	}
	use()
	if got := lastUsed(); !got.Equal(first.Add(-30 * time.Second)) {
		t.Fatalf("a use 30 s after the last was written: %s, want %s", got, first.Add(-30*time.Second))
	}
	// Two minutes ago: this use is recorded.
	if _, err := pool.Exec(ctx, "UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = $1", tok.ID); err != nil {
		t.Fatal(err)
	}
	use()
	if got := lastUsed(); time.Since(got) > time.Minute {
		t.Fatalf("a use 2 minutes after the last was not written: %s", got)
	}
}
