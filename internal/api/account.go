package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
)

func (a *API) registerAccount(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "get-me", Method: http.MethodGet, Path: "/v1/me", Tags: []string{"account"}, Security: signedIn,
		Summary: "The signed-in user",
	}, a.me)
	huma.Register(api, huma.Operation{
		OperationID: "list-tokens", Method: http.MethodGet, Path: "/v1/tokens", Tags: []string{"account"}, Security: signedIn,
		Summary: "List your API tokens", Description: "Live tokens, oldest first, without their secrets.",
	}, a.listTokens)
	huma.Register(api, huma.Operation{
		OperationID: "create-token", Method: http.MethodPost, Path: "/v1/tokens", Tags: []string{"account"}, Security: signedIn,
		Summary: "Create an API token", Description: "The response is the only time the token's secret is shown.", DefaultStatus: http.StatusCreated,
		Errors: []int{http.StatusTooManyRequests},
	}, a.createToken)
	huma.Register(api, huma.Operation{
		OperationID: "revoke-token", Method: http.MethodDelete, Path: "/v1/tokens/{id}", Tags: []string{"account"}, Security: signedIn,
		Summary: "Revoke an API token", DefaultStatus: http.StatusNoContent,
	}, a.revokeToken)
	huma.Register(api, huma.Operation{
		OperationID: "sign-out", Method: http.MethodDelete, Path: "/v1/sessions/current", Tags: []string{"account"}, Security: signedIn,
		Summary: "Sign out", Description: "Revokes the session the request's cookie carries and deletes the cookie.", DefaultStatus: http.StatusNoContent,
	}, a.signOut)
	huma.Register(api, huma.Operation{
		OperationID: "list-sessions", Method: http.MethodGet, Path: "/v1/sessions", Tags: []string{"account"}, Security: signedIn,
		Summary: "List your sessions", Description: "Your live browser sessions, oldest first; `current` marks the one this request carries.",
	}, a.listSessions)
	huma.Register(api, huma.Operation{
		OperationID: "revoke-session", Method: http.MethodDelete, Path: "/v1/sessions/{id}", Tags: []string{"account"}, Security: signedIn,
		Summary: "Sign a session out", Description: "Ends one of your sessions (another browser, say). Another user's session is a 404.", DefaultStatus: http.StatusNoContent,
	}, a.revokeSession)
}

// Session is a signed-in browser, without its cookie.
type Session struct {
	ID         uuid.UUID  `json:"id" format:"uuid"`
	CreatedAt  time.Time  `json:"created_at" doc:"when the browser signed in"`
	ExpiresAt  time.Time  `json:"expires_at"`
	UserAgent  string     `json:"user_agent" doc:"the User-Agent of the browser that signed in (at most 300 bytes); empty when it sent none"`
	LastSeenAt *time.Time `json:"last_seen_at" doc:"its last use, to the minute; null for sessions from before it was recorded"`
	Current    bool       `json:"current" doc:"true for the session this request carries"`
}

type listSessionsOutput struct {
	Body struct {
		Items      []Session `json:"items"`
		NextCursor string    `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listSessions(ctx context.Context, in *page) (*listSessionsOutput, error) {
	after, err := in.after()
	if err != nil {
		return nil, err
	}
	p := principal(ctx)
	sessions, err := a.Accounts.Sessions(ctx, p.UserID, after, in.fetch())
	if err != nil {
		return nil, err
	}
	sessions, next := cut(*in, sessions, func(s account.Session) uuid.UUID { return s.ID })
	out := &listSessionsOutput{}
	out.Body.Items = make([]Session, len(sessions))
	for i, s := range sessions {
		out.Body.Items[i] = Session{ID: s.ID, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, UserAgent: s.UserAgent, LastSeenAt: s.LastSeenAt, Current: s.ID == p.SessionID}
	}
	out.Body.NextCursor = next
	return out, nil
}

func (a *API) revokeSession(ctx context.Context, in *idInput) (*struct{}, error) {
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("not found")
	}
	if err := a.Accounts.RevokeOwnSession(ctx, principal(ctx).UserID, id); err != nil {
		return nil, problem(err)
	}
	return nil, nil
}

// User is a user as the API shows them.
type User struct {
	ID        uuid.UUID `json:"id" format:"uuid"`
	Username  string    `json:"username" doc:"GitHub login"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	AvatarURL string    `json:"avatar_url"`
	Admin     bool      `json:"admin"`
	Admitted  bool      `json:"admitted" doc:"false while the user waits for an admin to admit them"`
	CreatedAt time.Time `json:"created_at"`
}

type meOutput struct{ Body User }

func (a *API) me(ctx context.Context, _ *struct{}) (*meOutput, error) {
	u, err := a.Accounts.User(ctx, principal(ctx).UserID)
	if err != nil {
		return nil, err // a principal's user exists: sessions and tokens cascade with it
	}
	return &meOutput{Body: userOut(u)}, nil
}

func userOut(u account.User) User {
	return User{ID: u.ID, Username: u.Username, Name: u.Name, Email: u.Email, AvatarURL: u.AvatarURL, Admin: u.Admin, Admitted: u.Admitted, CreatedAt: u.CreatedAt}
}

// Token is an API token without its secret.
type Token struct {
	ID         uuid.UUID  `json:"id" format:"uuid"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at" doc:"null until first used"`
}

func tokenOut(t account.Token) Token {
	return Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt}
}

type listTokensOutput struct {
	Body struct {
		Items      []Token `json:"items"`
		NextCursor string  `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listTokens(ctx context.Context, in *page) (*listTokensOutput, error) {
	after, err := in.after()
	if err != nil {
		return nil, err
	}
	tokens, err := a.Accounts.Tokens(ctx, principal(ctx).UserID, after, in.fetch())
	if err != nil {
		return nil, err
	}
	tokens, next := cut(*in, tokens, func(t account.Token) uuid.UUID { return t.ID })
	out := &listTokensOutput{}
	out.Body.Items = make([]Token, len(tokens))
	for i, t := range tokens {
		out.Body.Items[i] = tokenOut(t)
	}
	out.Body.NextCursor = next
	return out, nil
}

type createTokenInput struct {
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"100" doc:"what the token is for, e.g. the machine it lives on"`
	}
}

type createTokenOutput struct {
	Body struct {
		Token
		Secret string `json:"token" doc:"the secret (zw_…), shown this once: send it as Authorization: Bearer <token>"`
	}
}

func (a *API) createToken(ctx context.Context, in *createTokenInput) (*createTokenOutput, error) {
	if err := a.limit(ctx, "tokens:user:"+principal(ctx).UserID.String(), a.Limits.Tokens); err != nil {
		return nil, err
	}
	t, err := a.Accounts.CreateToken(ctx, principal(ctx).UserID, in.Body.Name)
	if err != nil {
		return nil, problem(err)
	}
	out := &createTokenOutput{}
	out.Body.Token, out.Body.Secret = tokenOut(t), t.Secret
	return out, nil
}

type idInput struct {
	ID string `path:"id"`
}

func (a *API) revokeToken(ctx context.Context, in *idInput) (*struct{}, error) {
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("not found")
	}
	if err := a.Accounts.RevokeToken(ctx, principal(ctx).UserID, id); err != nil {
		return nil, problem(err)
	}
	return nil, nil
}

type signOutOutput struct {
	SetCookie http.Cookie `header:"Set-Cookie"`
}

func (a *API) signOut(ctx context.Context, _ *struct{}) (*signOutOutput, error) {
	p := principal(ctx)
	if p.SessionID == uuid.Nil {
		return nil, huma.Error400BadRequest("this request carries an API token, not a session; revoke the token with DELETE /v1/tokens/{id}")
	}
	if err := a.Accounts.RevokeSession(ctx, p.SessionID); err != nil {
		return nil, err
	}
	return &signOutOutput{SetCookie: a.sessionCookie("", time.Time{})}, nil
}
