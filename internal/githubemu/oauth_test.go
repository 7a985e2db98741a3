package githubemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v93/github"
	"golang.org/x/oauth2"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

func (e *env) oauthConfig() *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID, ClientSecret: clientSecret, RedirectURL: callbackURL,
		Scopes: []string{"read:user", "user:email"},
		Endpoint: oauth2.Endpoint{
			AuthURL:  e.api + "/login/oauth/authorize",
			TokenURL: e.api + "/login/oauth/access_token",
		},
	}
}

// authorize follows the browser to GitHub's authorize page and back, and
// returns the query the callback receives.
func (e *env) authorize(t *testing.T, cfg *oauth2.Config, state string) url.Values {
	t.Helper()
	resp, err := noRedirects.Get(cfg.AuthCodeURL(state))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != callbackURL {
		t.Fatalf("authorize redirected to %s, want the callback %s", got, callbackURL)
	}
	return loc.Query()
}

func TestOAuthWebFlowSignsInWithGoGitHub(t *testing.T) {
	e := newEnv(t)
	e.emu.ApproveAs("alice")
	cfg := e.oauthConfig()
	state := "csrf-state/with+odd chars="
	back := e.authorize(t, cfg, state)
	if back.Get("state") != state || back.Get("code") == "" {
		t.Fatalf("callback query %v: want the state unchanged and a code", back)
	}
	tok, err := cfg.Exchange(t.Context(), back.Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.AccessToken, "gho_") || tok.TokenType != "bearer" {
		t.Fatalf("token %q of type %q", tok.AccessToken, tok.TokenType)
	}

	gh, err := github.NewClient(github.WithHTTPClient(cfg.Client(t.Context(), tok)), github.WithURLs(new(e.api+"/"), nil))
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := gh.Users.Get(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if u.GetLogin() != "alice" || u.GetName() != "Alice Liddell" || u.GetID() == 0 || u.Email != nil {
		t.Fatalf("user %+v", u)
	}
	emails, _, err := gh.Users.ListEmails(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(emails) != 2 ||
		emails[0].GetEmail() != "alice@example.com" || !emails[0].GetPrimary() || !emails[0].GetVerified() || emails[0].GetVisibility() != "private" ||
		emails[1].GetEmail() != "alice@old.example" || emails[1].GetPrimary() || emails[1].GetVerified() || emails[1].Visibility != nil {
		t.Fatalf("emails %v", emails)
	}

	// What alice may connect: her installation and its repository.
	insts, _, err := gh.Apps.ListUserInstallations(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].GetID() != e.inst.ID || insts[0].GetAccount().GetLogin() != "alice" {
		t.Fatalf("user installations %v", insts)
	}
	repos, _, err := gh.Apps.ListUserRepos(t.Context(), e.inst.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if repos.GetTotalCount() != 1 || repos.Repositories[0].GetFullName() != "alice/app" {
		t.Fatalf("user installation repositories %v", repos)
	}

	// The code was spent: GitHub answers a second exchange with its error
	// shape, which x/oauth2 surfaces as a RetrieveError.
	_, err = cfg.Exchange(t.Context(), back.Get("code"))
	wantOAuthError(t, err, "bad_verification_code")
}

func TestOAuthWebFlowRefusals(t *testing.T) {
	e := newEnv(t)
	e.emu.ApproveAs("bob")
	cfg := e.oauthConfig()

	wrong := *cfg
	wrong.ClientSecret = "not-it"
	code := e.authorize(t, cfg, "s1").Get("code")
	_, err := wrong.Exchange(t.Context(), code)
	wantOAuthError(t, err, "incorrect_client_credentials")

	_, err = cfg.Exchange(t.Context(), "made-up")
	wantOAuthError(t, err, "bad_verification_code")

	// An anonymous client gets GitHub's 401 from the API.
	gh, _ := github.NewClient(github.WithURLs(new(e.api+"/"), nil))
	_, _, err = gh.Users.Get(t.Context(), "")
	var ghErr *github.ErrorResponse
	if !errors.As(err, &ghErr) || ghErr.Response.StatusCode != http.StatusUnauthorized || ghErr.Message != "Bad credentials" {
		t.Fatalf("anonymous /user: %v", err)
	}

	// bob may not see alice's installation: 404, as GitHub answers.
	bobTok, err := cfg.Exchange(t.Context(), e.authorize(t, cfg, "s4").Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	bobGH, _ := github.NewClient(github.WithAuthToken(bobTok.AccessToken), github.WithURLs(new(e.api+"/"), nil))
	if insts, _, err := bobGH.Apps.ListUserInstallations(t.Context(), nil); err != nil || len(insts) != 0 {
		t.Fatalf("bob's installations: %v, %v", insts, err)
	}
	_, resp, err := bobGH.Apps.ListUserRepos(t.Context(), e.inst.ID, nil)
	if resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob listing alice's installation: %v", err)
	}

	// The user clicks "Cancel": back to the callback with access_denied and
	// the state.
	e.emu.ApproveAs("")
	back := e.authorize(t, cfg, "s2")
	if back.Get("error") != "access_denied" || back.Get("state") != "s2" || back.Get("code") != "" {
		t.Fatalf("denied: callback query %v", back)
	}

	// A redirect_uri outside the registered callback goes nowhere near it.
	e.emu.ApproveAs("bob")
	evil := *cfg
	evil.RedirectURL = "http://evil.test/steal"
	back = e.authorize(t, &evil, "s3")
	if back.Get("error") != "redirect_uri_mismatch" || back.Get("code") != "" {
		t.Fatalf("foreign redirect_uri: callback query %v", back)
	}
}

// TestExpiringUserTokensRefresh: a GitHub App's user tokens expire, and
// x/oauth2 renews them with the refresh token, which is good once.
func TestExpiringUserTokensRefresh(t *testing.T) {
	e := newEnv(t, func(a *githubemu.App) { a.ExpiringUserTokens = true })
	e.emu.ApproveAs("alice")
	cfg := e.oauthConfig()
	tok, err := cfg.Exchange(t.Context(), e.authorize(t, cfg, "s").Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.AccessToken, "ghu_") || !strings.HasPrefix(tok.RefreshToken, "ghr_") ||
		time.Until(tok.Expiry) < 7*time.Hour || time.Until(tok.Expiry) > 9*time.Hour {
		t.Fatalf("token %q refresh %q expiry %s", tok.AccessToken, tok.RefreshToken, tok.Expiry)
	}

	// Pretend the token has expired: the token source refreshes it before
	// go-github's request.
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	ts := cfg.TokenSource(t.Context(), &stale)
	gh, _ := github.NewClient(github.WithHTTPClient(oauth2.NewClient(t.Context(), ts)), github.WithURLs(new(e.api+"/"), nil))
	u, _, err := gh.Users.Get(t.Context(), "")
	if err != nil || u.GetLogin() != "alice" {
		t.Fatalf("user after refresh: %v, %v", u, err)
	}
	fresh, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == tok.RefreshToken || !strings.HasPrefix(fresh.AccessToken, "ghu_") {
		t.Fatalf("refreshed token %q, refresh %q: want new ones", fresh.AccessToken, fresh.RefreshToken)
	}

	// The first refresh token was spent.
	_, err = cfg.TokenSource(t.Context(), &stale).Token()
	wantOAuthError(t, err, "bad_refresh_token")
}

func wantOAuthError(t *testing.T, err error, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != code || re.ErrorDescription == "" {
		t.Fatalf("exchange error %v, want a RetrieveError with code %s", err, code)
	}
}

// TestAccessTokenAnswersJSONWhenAsked pins the wire format the libraries
// above do not exercise: a JSON body in, JSON out when Accept asks for it,
// form-encoded otherwise, errors with status 200.
func TestAccessTokenAnswersJSONWhenAsked(t *testing.T) {
	e := newEnv(t)
	e.emu.ApproveAs("alice")
	cfg := e.oauthConfig()
	post := func(ctx context.Context, body, contentType, accept string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Endpoint.TokenURL, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		return http.DefaultClient.Do(req)
	}
	code := e.authorize(t, cfg, "x").Get("code")
	resp, err := post(t.Context(), `{"client_id":"`+clientID+`","client_secret":"`+clientSecret+`","code":"`+code+`"}`, "application/json", "application/json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Scope       string `json:"scope"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		!strings.HasPrefix(tok.AccessToken, "gho_") || tok.TokenType != "bearer" || tok.Scope != "read:user user:email" {
		t.Fatalf("JSON exchange: status %d, Content-Type %q, body %+v", resp.StatusCode, resp.Header.Get("Content-Type"), tok)
	}
	resp2, err := post(t.Context(), url.Values{"client_id": {clientID}, "client_secret": {"wrong"}, "code": {"c"}}.Encode(), "application/x-www-form-urlencoded", "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	body, _ := io.ReadAll(resp2.Body)
	form, _ := url.ParseQuery(string(body))
	if resp2.StatusCode != http.StatusOK || !strings.HasPrefix(resp2.Header.Get("Content-Type"), "application/x-www-form-urlencoded") ||
		form.Get("error") != "incorrect_client_credentials" {
		t.Fatalf("form exchange: status %d, Content-Type %q, body %s", resp2.StatusCode, resp2.Header.Get("Content-Type"), body)
	}
}

// signIn runs the web flow as login and returns go-github acting as them.
func (e *env) signIn(t *testing.T, login string) *github.Client {
	t.Helper()
	e.emu.ApproveAs(login)
	cfg := e.oauthConfig()
	tok, err := cfg.Exchange(t.Context(), e.authorize(t, cfg, "s").Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	gh, err := github.NewClient(github.WithAuthToken(tok.AccessToken), github.WithURLs(new(e.api+"/"), nil))
	if err != nil {
		t.Fatal(err)
	}
	return gh
}

func TestOrganizationInstallationsAreTheirMembers(t *testing.T) {
	e := newEnv(t)
	e.emu.AddUser(githubemu.User{Login: "acme", Organization: true, Members: []string{"alice"}})
	org, err := e.emu.AddInstallation(githubemu.Installation{Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.emu.AddRepository(org.ID, githubemu.Repository{Owner: "acme", Name: "site", Dir: e.repo.Dir}); err != nil {
		t.Fatal(err)
	}

	insts, _, err := e.signIn(t, "alice").Apps.ListUserInstallations(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 || insts[1].GetID() != org.ID || insts[1].GetTargetType() != "Organization" ||
		insts[1].GetAccount().GetType() != "Organization" || insts[1].GetAccount().GetLogin() != "acme" {
		t.Fatalf("alice's installations: %v", insts)
	}
	bob := e.signIn(t, "bob")
	if insts, _, err := bob.Apps.ListUserInstallations(t.Context(), nil); err != nil || len(insts) != 0 {
		t.Fatalf("bob's installations: %v, %v", insts, err)
	}
	if _, resp, _ := bob.Apps.ListUserRepos(t.Context(), org.ID, nil); resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob listing acme's repositories: %v", resp)
	}

	// An organisation cannot sign in.
	e.emu.ApproveAs("acme")
	if back := e.authorize(t, e.oauthConfig(), "s"); back.Get("error") != "access_denied" {
		t.Fatalf("organisation sign-in: %v", back)
	}
}
