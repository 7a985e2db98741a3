package githubemu

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// user is the signed-in user an OAuth token stands for; it answers 401 as
// GitHub does when there is none.
func (e *Emulator) user(w http.ResponseWriter, r *http.Request) (*User, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.userTokens[bearer(r)]
	if u, known := e.users[t.login]; ok && known && !u.Organization && (t.expires.IsZero() || time.Now().Before(t.expires)) {
		return u, true
	}
	writeError(w, http.StatusUnauthorized, "Bad credentials")
	return nil, false
}

func (e *Emulator) getUser(w http.ResponseWriter, r *http.Request) {
	u, ok := e.user(w, r)
	if !ok {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	writeJSON(w, http.StatusOK, e.fullUser(u))
}

func (e *Emulator) listEmails(w http.ResponseWriter, r *http.Request) {
	u, ok := e.user(w, r)
	if !ok {
		return
	}
	out := make([]emailJSON, 0, len(u.Emails))
	for _, m := range u.Emails {
		out = append(out, emailJSON{Email: m.Email, Primary: m.Primary, Verified: m.Verified, Visibility: nullable(m.Visibility)})
	}
	writeJSON(w, http.StatusOK, out)
}

// checkAppJWT verifies the App's JWT as GitHub does: RS256 with the App's
// key, iss the App's id (GitHub takes it as a number or a string), iat in
// the past and exp in the future, at most ten minutes apart and at most
// ten minutes ahead. The messages are GitHub's.
func (e *Emulator) checkAppJWT(w http.ResponseWriter, r *http.Request) bool {
	raw := bearer(r)
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return e.app.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuedAt(), jwt.WithExpirationRequired(),
		jwt.WithLeeway(time.Minute))
	if raw == "" || err != nil {
		writeError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return false
	}
	iss := fmt.Sprint(claims["iss"])
	if f, ok := claims["iss"].(float64); ok {
		iss = strconv.FormatFloat(f, 'f', -1, 64)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	switch {
	case iss != strconv.FormatInt(e.app.ID, 10):
		writeError(w, http.StatusUnauthorized, "'Issuer' claim ('iss') must be an Integer")
	case iat == nil:
		writeError(w, http.StatusUnauthorized, "'Issued at' claim ('iat') must be an Integer representing a time in the past")
	case exp.Sub(iat.Time) > maxJWTLifetime || time.Until(exp.Time) > maxJWTLifetime:
		writeError(w, http.StatusUnauthorized, "'Expiration time' claim ('exp') is too far in the future")
	default:
		return true
	}
	return false
}

func (e *Emulator) installation(w http.ResponseWriter, r *http.Request) (*Installation, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	in, ok := e.installations[id]
	if err != nil || !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return nil, false
	}
	return in, true
}

func (e *Emulator) getApp(w http.ResponseWriter, r *http.Request) {
	if !e.checkAppJWT(w, r) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"id": e.app.ID, "slug": e.app.Slug, "node_id": nodeID("Integration", e.app.ID), "name": e.app.Name,
		"client_id": e.app.ClientID, "html_url": e.webBase() + "/apps/" + e.app.Slug,
		"permissions": appPermissions, "events": []string{"push"},
		"created_at": epoch, "updated_at": epoch,
	})
}

func (e *Emulator) getInstallation(w http.ResponseWriter, r *http.Request) {
	if !e.checkAppJWT(w, r) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if in, ok := e.installation(w, r); ok {
		writeJSON(w, http.StatusOK, e.installationJSON(in))
	}
}

func (e *Emulator) createInstallationToken(w http.ResponseWriter, r *http.Request) {
	if !e.checkAppJWT(w, r) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.installation(w, r)
	if !ok {
		return
	}
	if in.Suspended {
		writeError(w, http.StatusForbidden, "This installation has been suspended")
		return
	}
	tok := "ghs_" + randomHex(18)
	exp := time.Now().Add(installationTokenTTL).UTC().Truncate(time.Second)
	e.instTokens[tok] = installationToken{installation: in.ID, expires: exp}
	writeJSON(w, http.StatusCreated, map[string]any{
		"token": tok, "expires_at": exp.Format(time.RFC3339),
		"permissions": appPermissions, "repository_selection": "selected",
	})
}

// installationOf is the installation an installation token was minted for;
// it answers 401 for an unknown, expired or suspended one. The caller
// holds e.mu.
func (e *Emulator) installationOf(w http.ResponseWriter, r *http.Request) (*Installation, bool) {
	t, ok := e.instTokens[bearer(r)]
	in := e.installations[t.installation]
	if !ok || time.Now().After(t.expires) || in == nil || in.Suspended {
		writeError(w, http.StatusUnauthorized, "Bad credentials")
		return nil, false
	}
	return in, true
}

func (e *Emulator) listInstallationRepos(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if in, ok := e.installationOf(w, r); ok {
		e.writeRepos(w, r, e.reposOf(in.ID))
	}
}

// userInstallations are the installations a user may use: those on the
// user's own account and on organisations the user is a member of. The
// caller holds e.mu.
func (e *Emulator) userInstallations(u *User) []*Installation {
	var out []*Installation
	for _, in := range e.installations {
		acct := e.owner(in.Account)
		if in.Account == u.Login || (acct.Organization && slices.Contains(acct.Members, u.Login)) {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b *Installation) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// listUserInstallations answers GET /user/installations: what a signed-in
// user may connect, the check that keeps one user from deploying another's
// repositories.
func (e *Emulator) listUserInstallations(w http.ResponseWriter, r *http.Request) {
	u, ok := e.user(w, r)
	if !ok {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	all := e.userInstallations(u)
	lo, hi := e.page(w, r, len(all))
	out := []installationJSON{}
	for _, in := range all[lo:hi] {
		out = append(out, e.installationJSON(in))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(all), "installations": out})
}

// listUserInstallationRepos answers GET
// /user/installations/{id}/repositories: 404 unless the user may use the
// installation, as GitHub answers.
func (e *Emulator) listUserInstallationRepos(w http.ResponseWriter, r *http.Request) {
	u, ok := e.user(w, r)
	if !ok {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	for _, in := range e.userInstallations(u) {
		if in.ID == id {
			e.writeRepos(w, r, e.reposOf(id))
			return
		}
	}
	writeError(w, http.StatusNotFound, "Not Found")
}

func (e *Emulator) writeRepos(w http.ResponseWriter, r *http.Request, repos []*Repository) {
	lo, hi := e.page(w, r, len(repos))
	out := []repoJSON{}
	for _, repo := range repos[lo:hi] {
		out = append(out, e.repoJSON(repo, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(repos), "repository_selection": "selected", "repositories": out})
}

// page pages a list of n items like GitHub: per_page (default 30, at most
// 100) and page, with a Link header to the next and last pages. It returns
// the bounds of the page's items. The caller holds e.mu.
func (e *Emulator) page(w http.ResponseWriter, r *http.Request, n int) (lo, hi int) {
	perPage, page := intParam(r, "per_page", 30), intParam(r, "page", 1)
	perPage = min(max(perPage, 1), 100)
	page = max(page, 1)
	last := max((n+perPage-1)/perPage, 1)
	if page < last {
		link := func(p int, rel string) string {
			u := url.URL{Path: r.URL.Path, RawQuery: url.Values{"per_page": {strconv.Itoa(perPage)}, "page": {strconv.Itoa(p)}}.Encode()}
			return fmt.Sprintf("<%s%s>; rel=%q", e.apiBase(), u.String(), rel)
		}
		w.Header().Set("Link", link(page+1, "next")+", "+link(last, "last"))
	}
	return min((page-1)*perPage, n), min(page*perPage, n)
}

func intParam(r *http.Request, name string, def int) int {
	if n, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil {
		return n
	}
	return def
}
