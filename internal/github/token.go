package github

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Token is an installation access token.
type Token struct {
	Value     zlog.Secret
	ExpiresAt time.Time
}

// tokenMargin: a cached token is renewed this long before it expires, so a
// token handed out is good for a while yet even with some clock skew.
// GitHub's tokens live an hour.
const tokenMargin = 5 * time.Minute

func (t Token) fresh(now time.Time) bool {
	return t.Value != "" && now.Add(tokenMargin).Before(t.ExpiresAt)
}

type tokenEntry struct {
	// mint is held by the one caller asking GitHub for a new token, so
	// that concurrent builds of one installation share a single request.
	// A channel rather than a mutex: waiting must respect the context.
	mint chan struct{}

	mu  sync.Mutex
	tok Token
}

func (e *tokenEntry) get() Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tok
}

func (c *Client) entry(installationID int64) *tokenEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.tokens[installationID]
	if !ok {
		e = &tokenEntry{mint: make(chan struct{}, 1)}
		c.tokens[installationID] = e
	}
	return e
}

// InstallationToken returns a token for the installation, from the cache
// while it has more than a few minutes left.
func (c *Client) InstallationToken(ctx context.Context, installationID int64) (Token, error) {
	e := c.entry(installationID)
	if t := e.get(); t.fresh(time.Now()) {
		return t, nil
	}
	select {
	case e.mint <- struct{}{}:
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
	defer func() { <-e.mint }()
	if t := e.get(); t.fresh(time.Now()) {
		return t, nil // minted by the caller we waited for
	}
	t, err := c.createInstallationToken(ctx, installationID)
	if err != nil {
		return Token{}, err
	}
	e.mu.Lock()
	e.tok = t
	e.mu.Unlock()
	return t, nil
}

// forget drops a cached token that GitHub no longer accepts (revoked, or
// the installation's permissions changed), so the next call mints anew.
func (c *Client) forget(installationID int64, t Token) {
	e := c.entry(installationID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tok.Value == t.Value {
		e.tok = Token{}
	}
}

func (c *Client) createInstallationToken(ctx context.Context, installationID int64) (Token, error) {
	op := fmt.Sprintf("create token for installation %d", installationID)
	appJWT, err := c.appJWT(time.Now())
	if err != nil {
		return Token{}, fmt.Errorf("github: %s: sign app JWT: %w", op, err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, fmt.Sprintf("/app/installations/%d/access_tokens", installationID), appJWT, nil)
	if err != nil {
		return Token{}, err
	}
	resp, err := c.do(req)
	if err != nil {
		return Token{}, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		e := responseError(op, resp)
		switch e.Kind {
		case ErrUnauthorized:
			e.Reason = "GitHub rejected the App's JWT: check the App id and private key"
		case ErrNotFound:
			e.Reason = "installation not found: the App may have been uninstalled"
		case ErrForbidden:
			e.Reason = "the App may not create tokens for this installation (suspended?)"
		}
		return Token{}, e
	}
	var body struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Token{}, fmt.Errorf("github: %s: decode response: %w", op, err)
	}
	if body.Token == "" || body.ExpiresAt.IsZero() {
		return Token{}, fmt.Errorf("github: %s: response without token or expiry", op)
	}
	return Token{Value: zlog.Secret(body.Token), ExpiresAt: body.ExpiresAt}, nil
}

// appJWT signs the App's own credential. GitHub accepts at most 10 minutes
// from iat to exp; iat is backdated a minute against clock drift, as
// GitHub's documentation advises, and exp leaves a minute of drift the
// other way.
func (c *Client) appJWT(now time.Time) (string, error) {
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(c.appID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-60 * time.Second)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(c.key)
}
