package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/zeitwork/zeitwork/internal/account"
)

// SessionCookie is the cookie that carries a browser's session.
const SessionCookie = "zw_session"

const (
	schemeSession = "session"
	schemeToken   = "token"
)

// signedIn is the Security of every operation that needs a user: either
// credential will do.
var signedIn = []map[string][]string{{schemeSession: {}}, {schemeToken: {}}}

type principalKey struct{}

// principal is who the request acts for; the authenticate middleware put
// it there for every operation with Security.
func principal(ctx context.Context) account.Principal {
	p, _ := ctx.Value(principalKey{}).(account.Principal)
	return p
}

// authenticate resolves the credential of operations that declare
// Security, and answers 401 for a missing or dead one before any handler
// runs. A bearer header wins over a cookie: a CLI that sends one means it.
func (a *API) authenticate(api huma.API) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		if len(ctx.Operation().Security) == 0 {
			next(ctx)
			return
		}
		var (
			p   account.Principal
			err = account.ErrUnauthenticated
		)
		if h := ctx.Header("Authorization"); h != "" {
			if token, ok := strings.CutPrefix(h, "Bearer "); ok {
				p, err = a.Accounts.Bearer(ctx.Context(), token)
			}
		} else if c, cerr := huma.ReadCookie(ctx, SessionCookie); cerr == nil {
			p, err = a.Accounts.Session(ctx.Context(), c.Value)
			// SameSite=Lax already keeps the cookie off cross-site POSTs;
			// browsers that say where a request comes from get a second no.
			if err == nil && !safeMethod(ctx.Method()) && ctx.Header("Sec-Fetch-Site") == "cross-site" {
				_ = huma.WriteErr(api, ctx, http.StatusForbidden, "a cross-site request cannot use the session cookie")
				return
			}
		}
		switch {
		case errors.Is(err, account.ErrUnauthenticated):
			ctx.SetHeader("WWW-Authenticate", `Bearer realm="zeitwork"`)
			_ = huma.WriteErr(api, ctx, http.StatusUnauthorized, "sign in, or send an API token as Authorization: Bearer zw_…")
			return
		case err != nil:
			_ = huma.WriteErr(api, ctx, http.StatusServiceUnavailable, "cannot check credentials right now", err)
			return
		}
		if !a.admitted(api, ctx, p) {
			return
		}
		next(huma.WithValue(ctx, principalKey{}, p))
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sessionCookie carries a session to the browser: HttpOnly so scripts
// cannot read it, Secure outside dev, SameSite=Lax so that other sites'
// forms cannot use it while links to the dashboard still sign in.
func (a *API) sessionCookie(value string, expires time.Time) http.Cookie {
	c := http.Cookie{Name: SessionCookie, Value: value, Path: "/", HttpOnly: true, Secure: !a.Dev, SameSite: http.SameSiteLaxMode, Expires: expires}
	if value == "" {
		c.MaxAge = -1 // deletes it
	}
	return c
}
