package account

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/slug"
)

// DefaultSessionTTL is how long a session lasts when Store.SessionTTL is 0.
const DefaultSessionTTL = 30 * 24 * time.Hour

// Store reads and writes users, their personal organisations, sessions
// and API tokens.
type Store struct {
	DB         db.Conn
	SessionTTL time.Duration
}

func (s Store) q() *db.Queries { return db.New(s.DB) }

// SignIn creates or refreshes the user GitHub vouches for and starts a
// session. A new user gets a personal organisation they own; the first
// user of an installation becomes its admin.
func (s Store) SignIn(ctx context.Context, p Profile) (User, Session, error) {
	switch {
	case p.GitHubUserID <= 0 || p.Login == "":
		return User{}, Session{}, fmt.Errorf("%w: the GitHub profile has no user id or login", ErrInvalid)
	case !strings.Contains(p.Email, "@"):
		return User{}, Session{}, fmt.Errorf("%w: GitHub reports no verified e-mail address", ErrInvalid)
	}
	var (
		user User
		sess Session
	)
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.UserLockSignUp(ctx); err != nil {
			return fmt.Errorf("lock sign-ups: %w", err)
		}
		newID := id.New()
		row, err := q.UserUpsertByGithubID(ctx, db.UserUpsertByGithubIDParams{
			ID: newID, GithubUserID: p.GitHubUserID, Username: p.Login, Name: ref(p.Name), Email: ref(p.Email), AvatarUrl: ref(p.AvatarURL),
		})
		if err != nil {
			return fmt.Errorf("upsert user: %w", err)
		}
		if row.ID == newID {
			if row, err = s.welcome(ctx, tx, row); err != nil {
				return err
			}
		}
		user = userFromRow(row)
		sess, err = startSession(ctx, q, user.ID, s.sessionTTL(), p.UserAgent)
		return err
	})
	if err != nil {
		return User{}, Session{}, fmt.Errorf("sign in GitHub user %d: %w", p.GitHubUserID, err)
	}
	return user, sess, nil
}

// welcome sets up a user's first sign-in: admin when nobody came before
// (the sign-up lock makes "nobody" exact), and a personal organisation.
func (s Store) welcome(ctx context.Context, tx pgx.Tx, u db.User) (db.User, error) {
	q := db.New(tx)
	others, err := q.UserExistsOther(ctx, u.ID)
	if err != nil {
		return u, fmt.Errorf("count users: %w", err)
	}
	if !others {
		if u, err = q.UserSetAdmin(ctx, db.UserSetAdminParams{ID: u.ID, Admin: true}); err != nil {
			return u, fmt.Errorf("make first user admin: %w", err)
		}
	}
	org, err := createOrganisation(ctx, tx, u.Username)
	if err != nil {
		return u, err
	}
	if _, err := q.OrganisationMemberCreate(ctx, db.OrganisationMemberCreateParams{ID: id.New(), OrganisationID: org.ID, UserID: u.ID, Role: "owner"}); err != nil {
		return u, fmt.Errorf("add owner to organisation %s: %w", org.Slug, err)
	}
	return u, nil
}

// createOrganisation names the organisation after the login, or the login
// with a number when an organisation already has that slug (a renamed
// GitHub account's old login taken by someone else).
func createOrganisation(ctx context.Context, tx pgx.Tx, login string) (db.Organisation, error) {
	base := slug.From(login)
	if base == "" {
		base = "user"
	}
	candidate := base
	for n := 2; n < 100; n++ {
		var org db.Organisation
		// A savepoint, so that a taken slug does not abort the sign-in.
		err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
			var err error
			org, err = db.New(sp).OrganisationCreate(ctx, db.OrganisationCreateParams{ID: id.New(), Slug: candidate, Name: login})
			return err
		})
		if err == nil {
			return org, nil
		}
		if !uniqueViolation(err) {
			return db.Organisation{}, fmt.Errorf("create organisation %s: %w", candidate, err)
		}
		candidate = slug.WithSuffix(base, n)
	}
	return db.Organisation{}, fmt.Errorf("create organisation: every slug from %q to %q is taken", base, candidate)
}

func uniqueViolation(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505"
}

func (s Store) sessionTTL() time.Duration {
	if s.SessionTTL > 0 {
		return s.SessionTTL
	}
	return DefaultSessionTTL
}

// MaxUserAgent is as much of a browser's User-Agent as a session keeps.
const MaxUserAgent = 300

func startSession(ctx context.Context, q *db.Queries, user uuid.UUID, ttl time.Duration, userAgent string) (Session, error) {
	// Only for showing: printable, and short enough for a list.
	userAgent = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, userAgent)
	if len(userAgent) > MaxUserAgent {
		userAgent = strings.ToValidUTF8(userAgent[:MaxUserAgent], "")
	}
	secret, hash := newSecret()
	row, err := q.SessionCreate(ctx, db.SessionCreateParams{ID: id.New(), UserID: user, TokenHash: hash, ExpiresAt: time.Now().Add(ttl), UserAgent: ref(strings.TrimSpace(userAgent))})
	if err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	return Session{ID: row.ID, UserID: user, Token: secret, ExpiresAt: row.ExpiresAt, CreatedAt: row.CreatedAt, UserAgent: deref(row.UserAgent), LastSeenAt: row.LastSeenAt}, nil
}

// Session returns the principal of a live session cookie's value, and
// records that the session was seen.
func (s Store) Session(ctx context.Context, cookie string) (Principal, error) {
	if !wellFormed(cookie) {
		return Principal{}, ErrUnauthenticated
	}
	row, err := s.q().SessionUseLiveByHash(ctx, hashOf(cookie))
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up session: %w", err)
	}
	return Principal{UserID: row.UserID, SessionID: row.ID}, nil
}

// RevokeSession signs a session out; revoking it twice is not an error.
func (s Store) RevokeSession(ctx context.Context, session uuid.UUID) error {
	if _, err := s.q().SessionRevoke(ctx, session); err != nil {
		return fmt.Errorf("revoke session %s: %w", session, err)
	}
	return nil
}

// Sessions returns up to limit of user's live sessions (neither revoked nor
// expired) with ids after after (uuid.Nil: from the first), oldest first,
// without their cookies.
func (s Store) Sessions(ctx context.Context, user, after uuid.UUID, limit int32) ([]Session, error) {
	rows, err := s.q().SessionListLiveByUser(ctx, db.SessionListLiveByUserParams{UserID: user, After: after, Max: limit})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	sessions := make([]Session, len(rows))
	for i, r := range rows {
		sessions[i] = Session{ID: r.ID, UserID: r.UserID, ExpiresAt: r.ExpiresAt, CreatedAt: r.CreatedAt, UserAgent: deref(r.UserAgent), LastSeenAt: r.LastSeenAt}
	}
	return sessions, nil
}

// RevokeOwnSession signs one of user's live sessions out; another user's
// session, or one already ended, is ErrNotFound, like one that never
// existed.
func (s Store) RevokeOwnSession(ctx context.Context, user, session uuid.UUID) error {
	n, err := s.q().SessionRevokeOwn(ctx, db.SessionRevokeOwnParams{ID: session, UserID: user})
	if err != nil {
		return fmt.Errorf("revoke session %s: %w", session, err)
	}
	if n == 0 {
		return fmt.Errorf("session %s: %w", session, ErrNotFound)
	}
	return nil
}

// Bearer returns the principal of a live API token ("zw_…"), and records
// that it was used.
func (s Store) Bearer(ctx context.Context, token string) (Principal, error) {
	secret, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok || !wellFormed(secret) {
		return Principal{}, ErrUnauthenticated
	}
	row, err := s.q().APITokenUseLiveByHash(ctx, hashOf(secret))
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up API token: %w", err)
	}
	return Principal{UserID: row.UserID, TokenID: row.ID}, nil
}

// User returns a user by id.
func (s Store) User(ctx context.Context, user uuid.UUID) (User, error) {
	row, err := s.q().UserGetByID(ctx, user)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, fmt.Errorf("user %s: %w", user, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("user %s: %w", user, err)
	}
	return userFromRow(row), nil
}

// MaxTokenName is the longest token name (api_tokens_name_check).
const MaxTokenName = 100

// CreateToken makes an API token for user; the returned Secret is the
// only copy there will ever be.
func (s Store) CreateToken(ctx context.Context, user uuid.UUID, name string) (Token, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > MaxTokenName {
		return Token{}, fmt.Errorf("%w: a token's name must have 1 to %d characters", ErrInvalid, MaxTokenName)
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		// Postgres text cannot hold NUL, and no other control character
		// belongs in a label shown in a list.
		return Token{}, fmt.Errorf("%w: a token's name must not contain control characters", ErrInvalid)
	}
	secret, hash := newSecret()
	row, err := s.q().APITokenCreate(ctx, db.APITokenCreateParams{ID: id.New(), UserID: user, Name: name, TokenHash: hash})
	if err != nil {
		return Token{}, fmt.Errorf("create API token: %w", err)
	}
	t := tokenFromRow(row)
	t.Secret = TokenPrefix + secret
	return t, nil
}

// Tokens returns up to limit of user's live tokens with ids after after
// (uuid.Nil: from the first), oldest first, without their secrets.
func (s Store) Tokens(ctx context.Context, user, after uuid.UUID, limit int32) ([]Token, error) {
	rows, err := s.q().APITokenListLiveByUser(ctx, db.APITokenListLiveByUserParams{UserID: user, After: after, Max: limit})
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	tokens := make([]Token, len(rows))
	for i, r := range rows {
		tokens[i] = tokenFromRow(r)
	}
	return tokens, nil
}

// RevokeToken revokes user's token; another user's token is ErrNotFound,
// like one that never existed.
func (s Store) RevokeToken(ctx context.Context, user, token uuid.UUID) error {
	n, err := s.q().APITokenRevoke(ctx, db.APITokenRevokeParams{ID: token, UserID: user})
	if err != nil {
		return fmt.Errorf("revoke API token %s: %w", token, err)
	}
	if n == 0 {
		return fmt.Errorf("API token %s: %w", token, ErrNotFound)
	}
	return nil
}
