// Package githubemu emulates the parts of GitHub that Zeitwork talks to:
// the OAuth web flow, the signed-in user and their e-mail addresses, a
// GitHub App's JWT exchanged for installation tokens, the repositories an
// installation sees, commit tarballs (made with git archive from local
// repositories and served from a separate codeload host), and webhook
// deliveries signed with the App's webhook secret.
//
// It is the one stand-in for GitHub that tests and `zeitwork dev` use, so it
// speaks GitHub's wire format (paths, headers, JSON field names, error
// shapes, status codes): a client that works against it must work against
// github.com by changing nothing but its base URLs. Tests prove that with
// the clients production uses (go-github, ghinstallation, x/oauth2).
package githubemu

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// App is the GitHub App the emulator plays: its id and key for the App's
// JWT, its OAuth client credentials for the web flow, and the secret its
// webhook deliveries are signed with.
type App struct {
	ID   int64
	Slug string
	Name string
	// PublicKey verifies the App's JWTs; the App holds the private half.
	PublicKey *rsa.PublicKey
	// ClientID and ClientSecret authenticate the OAuth web flow.
	ClientID     string
	ClientSecret string
	// CallbackURL, when set, bounds the redirect_uri a client may ask for:
	// GitHub accepts the registered URL or a path below it on the same host.
	CallbackURL   string
	WebhookSecret string
	// ExpiringUserTokens makes the web flow hand out what a GitHub App with
	// "expire user authorization tokens" on (GitHub's default) does: ghu_
	// tokens good for eight hours with a ghr_ refresh token, exchanged with
	// grant_type=refresh_token. Off, tokens are gho_ and never expire, as an
	// OAuth App's.
	ExpiringUserTokens bool
	// SetupURL is where the install page sends the browser back, with
	// installation_id, setup_action and the state it was given.
	SetupURL string
	// AuthorizeOnInstall plays the App setting "request user
	// authorization (OAuth) during installation": the install page then
	// sends the browser to CallbackURL instead, with a code for the
	// installing user as well.
	AuthorizeOnInstall bool
}

// User is a GitHub account that can sign in.
type User struct {
	ID    int64
	Login string
	Name  string
	// Email is the public profile address; empty (null on the wire) when
	// the user keeps it private, as many do.
	Email  string
	Emails []Email
	// Organization makes the account an organisation: it cannot sign in,
	// and its Members may use the App's installations on it.
	Organization bool
	Members      []string
}

func (u *User) kind() string {
	if u.Organization {
		return "Organization"
	}
	return "User"
}

// Email is one of a user's addresses as GET /user/emails lists it.
type Email struct {
	Email      string
	Primary    bool
	Verified   bool
	Visibility string // "public", "private", or empty (null)
}

// Installation is the App installed on an account.
type Installation struct {
	ID int64
	// Account is the login of the user or organisation the App is
	// installed on; it must have been added with AddUser.
	Account string
	// Suspended installations cannot mint tokens, as on GitHub.
	Suspended bool
}

// Repository is a repository an installation can read, backed by a local
// git repository (bare or with a work tree).
type Repository struct {
	ID            int64
	Owner         string
	Name          string
	Private       bool
	DefaultBranch string // "main" when empty
	// Dir is the local git repository tarballs and push payloads come from.
	Dir string
}

// FullName is owner/name.
func (r Repository) FullName() string { return r.Owner + "/" + r.Name }

// Emulator is an http.Handler for GitHub's API and web host (their paths do
// not collide, so one handler serves both); Codeload returns the handler for
// the separate download host. Safe for concurrent use.
type Emulator struct {
	app App
	mux *http.ServeMux

	mu            sync.Mutex
	apiURL        string
	codeloadURL   string
	approver      string // login the authorize endpoint approves as
	installOn     string // account the install page installs on; approver's when ""
	users         map[string]*User
	installations map[int64]*Installation
	repos         []*Repository // in the order added, as GitHub lists them
	repoInst      map[string]int64
	codes         map[string]oauthCode
	userTokens    map[string]userToken
	refreshTokens map[string]userToken // single use: GitHub rotates them
	instTokens    map[string]installationToken
	downloads     map[string]download // codeload token → what it fetches
	nextID        int64
}

type oauthCode struct {
	login, redirectURI, scope string
	expires                   time.Time
}

// userToken is who an OAuth token (or refresh token) stands for, until
// when (zero: until revoked, as classic OAuth tokens).
type userToken struct {
	login, scope string
	expires      time.Time
}

type installationToken struct {
	installation int64
	expires      time.Time
}

type download struct {
	repo    *Repository
	commit  string
	expires time.Time
}

// Lifetimes GitHub gives its credentials.
const (
	codeTTL              = 10 * time.Minute
	userTokenTTL         = 8 * time.Hour
	refreshTokenTTL      = 184 * 24 * time.Hour
	installationTokenTTL = time.Hour
	maxJWTLifetime       = 10 * time.Minute
)

// New returns an emulator playing app, with no users, installations or
// repositories yet.
func New(app App) *Emulator {
	e := &Emulator{
		app: app, mux: http.NewServeMux(),
		users: map[string]*User{}, installations: map[int64]*Installation{},
		repoInst: map[string]int64{}, codes: map[string]oauthCode{},
		userTokens: map[string]userToken{}, refreshTokens: map[string]userToken{}, instTokens: map[string]installationToken{},
		downloads: map[string]download{}, nextID: 1000,
	}
	e.mux.HandleFunc("GET /login/oauth/authorize", e.authorize)
	e.mux.HandleFunc("POST /login/oauth/access_token", e.accessToken)
	e.mux.HandleFunc("GET /user", e.getUser)
	e.mux.HandleFunc("GET /user/emails", e.listEmails)
	e.mux.HandleFunc("GET /user/installations", e.listUserInstallations)
	e.mux.HandleFunc("GET /user/installations/{id}/repositories", e.listUserInstallationRepos)
	e.mux.HandleFunc("GET /app", e.getApp)
	e.mux.HandleFunc("GET /app/installations/{id}", e.getInstallation)
	e.mux.HandleFunc("POST /app/installations/{id}/access_tokens", e.createInstallationToken)
	e.mux.HandleFunc("GET /installation/repositories", e.listInstallationRepos)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}/tarball/{ref...}", e.tarball)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}", e.getRepo)
	e.mux.HandleFunc("GET /repositories/{id}", e.getRepoByID)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}/branches/{branch...}", e.getBranch)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}/branches", e.listBranches)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref}", e.getCommit)
	e.mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{sha}/branches-where-head", e.branchesWhereHead)
	e.mux.HandleFunc("GET /apps/{slug}/installations/new", e.install)
	e.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
	return e
}

func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

// SetURLs says where the emulator (api) and the handler from Codeload
// (codeload) are served: links in responses and payloads point there, and
// tarball requests redirect to codeload. Codeload must be another host (or
// port) than the API, as codeload.github.com is, so that a client that
// carries its token to another host is seen doing so.
func (e *Emulator) SetURLs(api, codeload string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apiURL = strings.TrimSuffix(api, "/")
	e.codeloadURL = strings.TrimSuffix(codeload, "/")
}

// apiBase and webBase are the roots of links; github.com's until SetURLs.
// The caller holds e.mu.
func (e *Emulator) apiBase() string {
	if e.apiURL == "" {
		return "https://api.github.com"
	}
	return e.apiURL
}

func (e *Emulator) webBase() string {
	if e.apiURL == "" {
		return "https://github.com"
	}
	return e.apiURL
}

// ApproveAs makes the authorize endpoint approve as login, as if that user
// were signed in to GitHub and clicked "Authorize". With "" it denies,
// as the user clicking "Cancel" does.
func (e *Emulator) ApproveAs(login string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.approver = login
}

// AddUser adds (or replaces) a user; a zero ID is assigned. It returns the
// user as stored.
func (e *Emulator) AddUser(u User) User {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u.ID == 0 {
		u.ID = e.newID()
	}
	e.users[u.Login] = &u
	return u
}

// AddInstallation installs the App on an account added with AddUser; a
// zero ID is assigned. It returns the installation as stored.
func (e *Emulator) AddInstallation(in Installation) (Installation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.users[in.Account]; !ok {
		return Installation{}, fmt.Errorf("githubemu: installation on unknown account %q", in.Account)
	}
	if in.ID == 0 {
		in.ID = e.newID()
	}
	e.installations[in.ID] = &in
	return in, nil
}

// SetSuspended suspends or unsuspends an installation.
func (e *Emulator) SetSuspended(installationID int64, suspended bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if in, ok := e.installations[installationID]; ok {
		in.Suspended = suspended
	}
}

// AddRepository gives an installation access to a repository; a zero ID is
// assigned. It returns the repository as stored.
func (e *Emulator) AddRepository(installationID int64, r Repository) (Repository, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.installations[installationID]; !ok {
		return Repository{}, fmt.Errorf("githubemu: unknown installation %d", installationID)
	}
	if r.Owner == "" || r.Name == "" || r.Dir == "" {
		return Repository{}, fmt.Errorf("githubemu: repository needs an owner, a name and a local git directory")
	}
	if r.ID == 0 {
		r.ID = e.newID()
	}
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	// A repository belongs to one installation: adding it again moves it.
	e.repos = slices.DeleteFunc(e.repos, func(old *Repository) bool { return old.FullName() == r.FullName() })
	e.repos = append(e.repos, &r)
	e.repoInst[r.FullName()] = installationID
	return r, nil
}

// RemoveRepository takes an installation's access to a repository away.
func (e *Emulator) RemoveRepository(fullName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.repoInst, fullName)
	e.repos = slices.DeleteFunc(e.repos, func(r *Repository) bool { return r.FullName() == fullName })
}

func (e *Emulator) newID() int64 {
	e.nextID++
	return e.nextID
}

func (e *Emulator) repo(fullName string) (*Repository, int64, bool) {
	inst, ok := e.repoInst[fullName]
	if !ok {
		return nil, 0, false
	}
	for _, r := range e.repos {
		if r.FullName() == fullName {
			return r, inst, true
		}
	}
	return nil, 0, false
}

func (e *Emulator) reposOf(installationID int64) []*Repository {
	var out []*Repository
	for _, r := range e.repos {
		if e.repoInst[r.FullName()] == installationID {
			out = append(out, r)
		}
	}
	return out
}

// writeError answers in GitHub's REST error shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
		"status":            fmt.Sprint(status),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// bearer is the credential of an Authorization header; GitHub takes both
// "Bearer" and the older "token" scheme.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if v, ok := strings.CutPrefix(h, p); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
