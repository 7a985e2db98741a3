package account

import (
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
)

var (
	// ErrUnauthenticated: the credential is unknown, revoked or expired.
	ErrUnauthenticated = errors.New("not signed in")
	// ErrNotFound: no such token of this user.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a request the caller must fix (a profile without a
	// verified e-mail, a token without a name).
	ErrInvalid = errors.New("invalid")
)

// User is someone who signed in with GitHub.
type User struct {
	ID           uuid.UUID
	GitHubUserID int64
	Username     string
	Name         string
	Email        string
	AvatarURL    string
	Admin        bool
	// Admitted users may use the platform; the others are on the waitlist.
	Admitted  bool
	CreatedAt time.Time
}

func userFromRow(r db.User) User {
	return User{
		ID: r.ID, GitHubUserID: r.GithubUserID, Username: r.Username, Name: deref(r.Name), Email: deref(r.Email),
		AvatarURL: deref(r.AvatarUrl), Admin: r.Admin, Admitted: r.Admitted, CreatedAt: r.CreatedAt,
	}
}

// Profile is what GitHub says about the user signing in. Email must be an
// address GitHub reports as verified (the OAuth handler picks it from
// /user/emails), never the profile's public e-mail, which anyone can set.
type Profile struct {
	GitHubUserID int64
	Login        string
	Name         string
	Email        string
	AvatarURL    string
	// UserAgent is the browser's that signs in, kept with its session to
	// tell it apart in the list of sessions; not part of the profile.
	UserAgent string
}

// Session is a signed-in browser. Token is the cookie's value: it exists
// only in the value SignIn returns.
type Session struct {
	ID         uuid.UUID
	UserID     uuid.UUID
	Token      string
	ExpiresAt  time.Time
	CreatedAt  time.Time
	UserAgent  string     // "" when none was sent
	LastSeenAt *time.Time // to the minute
}

// Token is an API token. Secret is set only in the value CreateToken
// returns: it is shown once.
type Token struct {
	ID         uuid.UUID
	Name       string
	Secret     string
	LastUsedAt *time.Time
	CreatedAt  time.Time
}

func tokenFromRow(r db.ApiToken) Token {
	return Token{ID: r.ID, Name: r.Name, LastUsedAt: r.LastUsedAt, CreatedAt: r.CreatedAt}
}

// Principal is who a request acts for, and with which credential (exactly
// one of SessionID and TokenID is set).
type Principal struct {
	UserID    uuid.UUID
	SessionID uuid.UUID
	TokenID   uuid.UUID
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ref(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
