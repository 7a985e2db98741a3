package githubemu

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// authorize plays the page a signed-in user sees at
// github.com/login/oauth/authorize: it approves (or denies) at once as the
// user set with ApproveAs and sends the browser back with a code and the
// state it was given, unchanged.
func (e *Emulator) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != e.app.ClientID {
		writeError(w, http.StatusNotFound, "Not Found") // GitHub shows its 404 page
		return
	}
	callback := e.app.CallbackURL
	redirectURI := q.Get("redirect_uri")
	if redirectURI != "" && callback != "" && !redirectAllowed(callback, redirectURI) {
		back(w, r, callback, q.Get("state"), url.Values{
			"error":             {"redirect_uri_mismatch"},
			"error_description": {"The redirect_uri is not associated with this application."},
			"error_uri":         {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch"},
		})
		return
	}
	if redirectURI == "" {
		redirectURI = callback
	}
	if redirectURI == "" {
		writeError(w, http.StatusBadRequest, "redirect_uri is required: the App has no callback URL")
		return
	}
	e.mu.Lock()
	login := e.approver
	u, known := e.users[login]
	known = known && !u.Organization
	code := ""
	if known {
		code = randomHex(10)
		e.codes[code] = oauthCode{login: login, redirectURI: q.Get("redirect_uri"), scope: q.Get("scope"),
			expires: time.Now().Add(codeTTL)}
	}
	e.mu.Unlock()
	if !known {
		back(w, r, redirectURI, q.Get("state"), url.Values{
			"error":             {"access_denied"},
			"error_description": {"The user has denied your application access."},
			"error_uri":         {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied"},
		})
		return
	}
	back(w, r, redirectURI, q.Get("state"), url.Values{"code": {code}})
}

// redirectAllowed applies GitHub's rule: same scheme, host and port as the
// registered callback, and a path at or below its path.
func redirectAllowed(callback, redirect string) bool {
	c, err1 := url.Parse(callback)
	u, err2 := url.Parse(redirect)
	if err1 != nil || err2 != nil {
		return false
	}
	if c.Scheme != u.Scheme || c.Host != u.Host {
		return false
	}
	base := strings.TrimSuffix(c.Path, "/")
	return u.Path == c.Path || u.Path == base || strings.HasPrefix(u.Path, base+"/")
}

func back(w http.ResponseWriter, r *http.Request, to, state string, params url.Values) {
	u, err := url.Parse(to)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid redirect_uri")
		return
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	if state != "" {
		q.Set("state", state)
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// accessToken exchanges a code for a user token. Like GitHub it takes the
// parameters as a form, a query or JSON, answers failures with 200 and an
// "error" field, and answers form-encoded unless the client asks for JSON.
func (e *Emulator) accessToken(w http.ResponseWriter, r *http.Request) {
	p, ok := tokenParams(r)
	if !ok {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	// Client credentials may also come as HTTP Basic, which x/oauth2 uses
	// when it cannot tell what the server wants.
	if id, secret, basic := r.BasicAuth(); basic {
		p.Set("client_id", id)
		p.Set("client_secret", secret)
	}
	if p.Get("client_id") != e.app.ClientID || p.Get("client_secret") != e.app.ClientSecret {
		tokenAnswer(w, r, oauthError("incorrect_client_credentials",
			"The client_id and/or client_secret passed are incorrect.", "incorrect-client-credentials"))
		return
	}
	if p.Get("grant_type") == "refresh_token" {
		e.refresh(w, r, p.Get("refresh_token"))
		return
	}
	e.mu.Lock()
	c, found := e.codes[p.Get("code")]
	delete(e.codes, p.Get("code")) // a code is good for one exchange, right or wrong
	e.mu.Unlock()
	switch {
	case !found || time.Now().After(c.expires):
		tokenAnswer(w, r, oauthError("bad_verification_code",
			"The code passed is incorrect or expired.", "bad-verification-code"))
		return
	case p.Get("redirect_uri") != "" && c.redirectURI != "" && p.Get("redirect_uri") != c.redirectURI:
		tokenAnswer(w, r, oauthError("redirect_uri_mismatch",
			"The redirect_uri MUST match the registered callback URL for this application.", "redirect-uri-mismatch2"))
		return
	}
	tokenAnswer(w, r, e.issueUserToken(userToken{login: c.login, scope: c.scope}))
}

// refresh exchanges a refresh token for a new token and refresh token; the
// old refresh token is spent, as on GitHub.
func (e *Emulator) refresh(w http.ResponseWriter, r *http.Request, refreshToken string) {
	e.mu.Lock()
	t, ok := e.refreshTokens[refreshToken]
	delete(e.refreshTokens, refreshToken)
	e.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		tokenAnswer(w, r, oauthError("bad_refresh_token",
			"The refresh token passed is incorrect or expired.", "bad-refresh-token"))
		return
	}
	tokenAnswer(w, r, e.issueUserToken(t))
}

// issueUserToken mints a user token (and, for expiring tokens, its refresh
// token) and returns the fields of the answer, in GitHub's order.
func (e *Emulator) issueUserToken(t userToken) []field {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.app.ExpiringUserTokens {
		tok := "gho_" + randomHex(18)
		e.userTokens[tok] = userToken{login: t.login, scope: t.scope}
		return []field{{"access_token", tok}, {"token_type", "bearer"}, {"scope", t.scope}}
	}
	tok, refresh := "ghu_"+randomHex(18), "ghr_"+randomHex(38)
	now := time.Now()
	e.userTokens[tok] = userToken{login: t.login, scope: t.scope, expires: now.Add(userTokenTTL)}
	e.refreshTokens[refresh] = userToken{login: t.login, scope: t.scope, expires: now.Add(refreshTokenTTL)}
	return []field{
		{"access_token", tok},
		{"expires_in", int(userTokenTTL.Seconds())},
		{"refresh_token", refresh},
		{"refresh_token_expires_in", int(refreshTokenTTL.Seconds())},
		{"token_type", "bearer"},
		{"scope", ""}, // GitHub Apps have permissions, not scopes
	}
}

func oauthError(code, description, anchor string) []field {
	return []field{
		{"error", code},
		{"error_description", description},
		{"error_uri", "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#" + anchor},
	}
}

// tokenAnswer writes fields in the order given, as JSON when the client
// accepts it and form-encoded otherwise. GitHub answers 200 either way.
// field is one field of a token endpoint answer; numbers stay numbers in
// JSON.
type field struct {
	name  string
	value any
}

func tokenAnswer(w http.ResponseWriter, r *http.Request, fields []field) {
	if strings.Contains(r.Header.Get("Accept"), "json") {
		m := map[string]any{}
		for _, f := range fields {
			m[f.name] = f.value
		}
		writeJSON(w, http.StatusOK, m)
		return
	}
	v := make([]string, 0, len(fields))
	for _, f := range fields {
		v = append(v, url.QueryEscape(f.name)+"="+url.QueryEscape(fmt.Sprint(f.value)))
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	_, _ = w.Write([]byte(strings.Join(v, "&")))
}

func tokenParams(r *http.Request) (url.Values, bool) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var body map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&body); err != nil {
			return nil, false
		}
		p := r.URL.Query()
		for k, v := range body {
			if s, ok := v.(string); ok {
				p.Set(k, s)
			}
		}
		return p, true
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		return nil, false
	}
	return r.Form, true
}
