package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/go-github/v93/github"
	"golang.org/x/oauth2"

	"github.com/zeitwork/zeitwork/internal/account"
)

// GitHubSignIn is the OAuth web flow's configuration. The flow sends no
// redirect_uri: GitHub returns to the callback URL registered with the App
// (https://<api host>/v1/auth/github/callback), so no request header
// decides where a code goes.
type GitHubSignIn struct {
	ClientID     string
	ClientSecret string
	// WebURL serves /login/oauth/authorize and /login/oauth/access_token;
	// APIURL serves /user and /user/emails.
	WebURL string
	APIURL string
}

// stateCookie binds a sign-in's state to the browser that started it.
// Its path keeps it off every other request.
const (
	stateCookie     = "zw_oauth_state"
	stateCookiePath = "/v1/auth/github"
	stateTTL        = 10 * time.Minute
)

func (g *GitHubSignIn) oauth() *oauth2.Config {
	web := strings.TrimSuffix(g.WebURL, "/")
	return &oauth2.Config{
		ClientID: g.ClientID, ClientSecret: g.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL: web + "/login/oauth/authorize", TokenURL: web + "/login/oauth/access_token",
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// registerSignIn registers how people get in: GitHub sign-in (when
// configured) and the waitlist.
func (a *API) registerSignIn(api huma.API) {
	a.registerWaitlist(api)
	if a.GitHub == nil {
		return
	}
	huma.Register(api, huma.Operation{
		OperationID: "github-sign-in", Method: http.MethodGet, Path: "/v1/auth/github", Tags: []string{"account"},
		Summary:       "Sign in with GitHub",
		Description:   "Starts GitHub's OAuth web flow: redirects the browser to GitHub, which sends it back to /v1/auth/github/callback. `next` is where the browser lands once signed in: a path on this site, `/` when absent.",
		DefaultStatus: http.StatusFound, Errors: []int{http.StatusTooManyRequests},
	}, a.githubStart)
	huma.Register(api, huma.Operation{
		OperationID: "github-callback", Method: http.MethodGet, Path: "/v1/auth/github/callback", Tags: []string{"account"},
		Summary:       "GitHub's return from sign-in",
		Description:   "Where GitHub sends the browser back. Checks the state against the browser's, signs the user in with their primary verified e-mail, sets the session cookie and redirects to `next`.",
		DefaultStatus: http.StatusFound, Errors: []int{http.StatusTooManyRequests},
	}, a.githubCallback)
}

type redirectOutput struct {
	Location  string        `header:"Location"`
	SetCookie []http.Cookie `header:"Set-Cookie"`
}

type githubStartInput struct {
	Next   string `query:"next" doc:"a path on this site to land on once signed in, e.g. /projects"`
	Client client
}

func (a *API) githubStart(ctx context.Context, in *githubStartInput) (*redirectOutput, error) {
	if err := a.limitAddress(ctx, "signin:start", in.Client, a.Limits.SignIn); err != nil {
		return nil, err
	}
	next := in.Next
	if next == "" {
		next = "/"
	}
	if !localPath(next) {
		return nil, huma.Error400BadRequest("next must be a path on this site, such as /projects")
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	state := base64.RawURLEncoding.EncodeToString(b)
	return &redirectOutput{
		Location:  a.GitHub.oauth().AuthCodeURL(state, oauth2.SetAuthURLParam("scope", "read:user user:email")),
		SetCookie: []http.Cookie{a.stateCookie(state+"."+base64.RawURLEncoding.EncodeToString([]byte(next)), stateTTL)},
	}, nil
}

// localPath accepts a path on this site and nothing a browser could read
// as another host: no scheme, no //host, no backslashes (which browsers
// treat as slashes).
func localPath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n\t") {
		return false
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil
}

func (a *API) stateCookie(value string, ttl time.Duration) http.Cookie {
	c := http.Cookie{Name: stateCookie, Value: value, Path: stateCookiePath, HttpOnly: true, Secure: !a.Dev, SameSite: http.SameSiteLaxMode, MaxAge: int(ttl.Seconds())}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}

type githubCallbackInput struct {
	Code             string `query:"code"`
	State            string `query:"state"`
	Error            string `query:"error" doc:"GitHub's reason when the user did not authorise, e.g. access_denied"`
	ErrorDescription string `query:"error_description"`
	Cookie           string `cookie:"zw_oauth_state"`
	UserAgent        string `header:"User-Agent" doc:"kept with the session, to tell it apart among your sessions"`
	Client           client
	// An App that requests user authorization during installation sends
	// the browser back to its first callback URL, this one, with these.
	InstallationID string `query:"installation_id" doc:"set when GitHub returns from an installation: forwarded to /v1/github/setup"`
	SetupAction    string `query:"setup_action"`
	query          string
}

// Resolve keeps the raw query, to forward it as GitHub sent it.
func (in *githubCallbackInput) Resolve(ctx huma.Context) []error {
	in.query = ctx.URL().RawQuery
	return nil
}

func (a *API) githubCallback(ctx context.Context, in *githubCallbackInput) (*redirectOutput, error) {
	// Counted before anything is checked: each callback may cost a code
	// exchange and two GitHub reads.
	if err := a.limitAddress(ctx, "signin:callback", in.Client, a.Limits.SignIn); err != nil {
		return nil, err
	}
	if in.InstallationID != "" || in.SetupAction != "" {
		return &redirectOutput{Location: githubSetupPath + "?" + in.query}, nil
	}
	state, encNext, _ := strings.Cut(in.Cookie, ".")
	rawNext, err := base64.RawURLEncoding.DecodeString(encNext)
	next := string(rawNext)
	switch {
	case in.Cookie == "":
		return nil, huma.Error400BadRequest("this browser did not start a sign-in (or it took longer than 10 minutes): start again at /v1/auth/github")
	case state == "" || err != nil || !localPath(next) || subtle.ConstantTimeCompare([]byte(state), []byte(in.State)) != 1:
		return nil, huma.Error400BadRequest("the sign-in's state does not match this browser's: start again at /v1/auth/github")
	case in.Error != "":
		return nil, huma.Error403Forbidden(fmt.Sprintf("GitHub did not sign you in (%s): %s", in.Error, in.ErrorDescription))
	case in.Code == "":
		return nil, huma.Error400BadRequest("GitHub sent no code")
	}
	profile, err := a.githubProfile(ctx, in.Code)
	if err != nil {
		return nil, err
	}
	profile.UserAgent = in.UserAgent // shown in the list of sessions
	_, sess, err := a.Accounts.SignIn(ctx, profile)
	if err != nil {
		return nil, problem(err)
	}
	return &redirectOutput{
		Location:  next,
		SetCookie: []http.Cookie{a.sessionCookie(sess.Token, sess.ExpiresAt), a.stateCookie("", 0)},
	}, nil
}

// githubProfile exchanges the code and reads who GitHub says the user is,
// with the primary address only if GitHub verified it: the profile's
// public e-mail is whatever the user typed.
func (a *API) githubProfile(ctx context.Context, code string) (account.Profile, error) {
	conf := a.GitHub.oauth()
	tok, err := conf.Exchange(ctx, code)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			return account.Profile{}, huma.Error400BadRequest("GitHub refused the sign-in's code (" + re.ErrorCode + "): start again at /v1/auth/github")
		}
		return account.Profile{}, huma.Error502BadGateway("cannot reach GitHub", err)
	}
	base := strings.TrimSuffix(a.GitHub.APIURL, "/") + "/"
	gh, err := github.NewClient(github.WithHTTPClient(conf.Client(ctx, tok)), github.WithURLs(&base, nil))
	if err != nil {
		return account.Profile{}, fmt.Errorf("GitHub client: %w", err)
	}
	u, _, err := gh.Users.Get(ctx, "")
	if err != nil {
		return account.Profile{}, huma.Error502BadGateway("cannot read the GitHub user", err)
	}
	emails, _, err := gh.Users.ListEmails(ctx, &github.ListOptions{PerPage: 100})
	if err != nil {
		return account.Profile{}, huma.Error502BadGateway("cannot read the GitHub user's e-mail addresses", err)
	}
	p := account.Profile{GitHubUserID: u.GetID(), Login: u.GetLogin(), Name: u.GetName(), AvatarURL: u.GetAvatarURL()}
	for _, e := range emails {
		if e.GetPrimary() && e.GetVerified() {
			p.Email = e.GetEmail()
		}
	}
	if p.Email == "" {
		return account.Profile{}, huma.Error403Forbidden("your GitHub account has no verified primary e-mail address: verify it on GitHub, then sign in again")
	}
	return p, nil
}
