// Package githubapp is Zeitwork acting as its GitHub App, through the
// well-kept clients: ghinstallation signs the App's JWT and mints
// installation tokens (cached until shortly before they expire, one
// transport per installation, shared by every request of the process), and
// go-github speaks the REST API. It reads installations, the repositories
// an installation can see and their branches; it knows nothing of
// Zeitwork's tables, so the API decides what to record.
//
// Errors GitHub answers are turned into the package's sentinels
// (ErrNotFound, ErrSuspended) at this boundary; anything else (GitHub
// unreachable, a 5xx) is wrapped ErrUnavailable.
package githubapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v93/github"
)

var (
	// ErrNotFound: no such installation, repository or branch, or none the
	// credential may see (GitHub answers both with 404).
	ErrNotFound = errors.New("not found on GitHub")
	// ErrSuspended: the installation is suspended; it mints no tokens.
	ErrSuspended = errors.New("installation suspended")
	// ErrUnavailable: GitHub did not answer usefully; trying later may work.
	ErrUnavailable = errors.New("GitHub unavailable")
)

// Config says which App this is and where GitHub is.
type Config struct {
	// ID and PrivateKey (PEM, as GitHub hands it out) sign the App's JWT.
	ID         int64
	PrivateKey []byte
	// Slug names the App in its install link: <WebURL>/apps/<Slug>.
	Slug string
	// APIURL is the REST API's root (https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server); WebURL the web host.
	APIURL string
	WebURL string
	// Transport sends the requests; http.DefaultTransport when nil.
	Transport http.RoundTripper
}

// App is safe for concurrent use.
type App struct {
	cfg  Config
	apps *ghinstallation.AppsTransport
	base string // APIURL with a trailing slash, as go-github wants it

	mu    sync.Mutex
	insts map[int64]*ghinstallation.Transport
}

// timeout bounds each call to GitHub; the caller's context may end it
// sooner.
const timeout = 30 * time.Second

// New checks cfg (the key must parse) and returns the App; nothing is sent.
func New(cfg Config) (*App, error) {
	if cfg.ID == 0 || cfg.Slug == "" {
		return nil, errors.New("githubapp: the App needs an id and a slug")
	}
	for _, u := range []string{cfg.APIURL, cfg.WebURL} {
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			return nil, fmt.Errorf("githubapp: %q is not a URL", u)
		}
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	apps, err := ghinstallation.NewAppsTransport(cfg.Transport, cfg.ID, cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("githubapp: private key: %w", err)
	}
	apps.BaseURL = strings.TrimSuffix(cfg.APIURL, "/")
	return &App{cfg: cfg, apps: apps, base: strings.TrimSuffix(cfg.APIURL, "/") + "/", insts: map[int64]*ghinstallation.Transport{}}, nil
}

// InstallURL is the page where a person installs the App; GitHub sends the
// browser back to the App's setup (or callback) URL with state unchanged.
func (a *App) InstallURL(state string) string {
	return strings.TrimSuffix(a.cfg.WebURL, "/") + "/apps/" + url.PathEscape(a.cfg.Slug) + "/installations/new?" +
		url.Values{"state": {state}}.Encode()
}

func (a *App) client(rt http.RoundTripper) *github.Client {
	gh, err := github.NewClient(github.WithHTTPClient(&http.Client{Transport: rt, Timeout: timeout}), github.WithURLs(&a.base, nil))
	if err != nil {
		// Only a base URL without a trailing slash fails, and New added it.
		panic(fmt.Sprintf("githubapp: client: %v", err))
	}
	return gh
}

// installation is the client acting as an installation. Its transport is
// kept, so that its token is minted once an hour rather than per request.
func (a *App) installation(id int64) *github.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr, ok := a.insts[id]
	if !ok {
		tr = ghinstallation.NewFromAppsTransport(a.apps, id)
		tr.BaseURL = a.apps.BaseURL
		a.insts[id] = tr
	}
	return a.client(tr)
}

// Installation is the App installed on an account.
type Installation struct {
	ID           int64
	AccountLogin string
	AccountType  string // "User" or "Organization"
	Suspended    bool
}

// Installation reads an installation with the App's JWT.
func (a *App) Installation(ctx context.Context, id int64) (Installation, error) {
	in, _, err := a.client(a.apps).Apps.GetInstallation(ctx, id)
	if err != nil {
		return Installation{}, classify(fmt.Sprintf("installation %d", id), err)
	}
	return Installation{
		ID: in.GetID(), AccountLogin: in.GetAccount().GetLogin(), AccountType: in.GetAccount().GetType(),
		Suspended: in.SuspendedAt != nil,
	}, nil
}

// UserCanUse says whether the user whose OAuth token tok is may use the
// installation: whether GET /user/installations lists it. That list holds
// the installations on the user's account and on organisations the user
// belongs to, which is what keeps one person from connecting another's.
func (a *App) UserCanUse(ctx context.Context, userClient *http.Client, installationID int64) (bool, error) {
	c := *userClient
	if c.Timeout == 0 {
		c.Timeout = timeout
	}
	gh, err := github.NewClient(github.WithHTTPClient(&c), github.WithURLs(&a.base, nil))
	if err != nil {
		return false, fmt.Errorf("githubapp: client: %w", err)
	}
	opts := &github.ListOptions{PerPage: 100}
	for {
		page, resp, err := gh.Apps.ListUserInstallations(ctx, opts)
		if err != nil {
			return false, classify("the user's installations", err)
		}
		for _, in := range page {
			if in.GetID() == installationID {
				return true, nil
			}
		}
		if resp.NextPage == 0 {
			return false, nil
		}
		opts.Page = resp.NextPage
	}
}

// Repository is a repository an installation can see.
type Repository struct {
	ID            int64
	FullName      string // owner/name
	Private       bool
	DefaultBranch string
	HTMLURL       string
}

func repository(r *github.Repository) Repository {
	return Repository{ID: r.GetID(), FullName: r.GetFullName(), Private: r.GetPrivate(), DefaultBranch: r.GetDefaultBranch(), HTMLURL: r.GetHTMLURL()}
}

// RepositoryPage is one page of GitHub's list, with GitHub's paging.
type RepositoryPage struct {
	Repositories []Repository
	Total        int
	NextPage     int // 0 on the last page
}

// Repositories lists a page of what the installation can see; page counts
// from 1 and perPage is at most 100, as on GitHub.
func (a *App) Repositories(ctx context.Context, installationID int64, page, perPage int) (RepositoryPage, error) {
	list, resp, err := a.installation(installationID).Apps.ListRepos(ctx, &github.ListOptions{Page: page, PerPage: perPage})
	if err != nil {
		return RepositoryPage{}, a.installationError(ctx, installationID, fmt.Sprintf("repositories of installation %d", installationID), resp, err)
	}
	out := RepositoryPage{Total: list.GetTotalCount(), NextPage: resp.NextPage}
	for _, r := range list.Repositories {
		out.Repositories = append(out.Repositories, repository(r))
	}
	return out, nil
}

// Repository reads a repository the installation can see, by its id when
// id is not 0 and otherwise by its owner/name. One it cannot see is
// ErrNotFound.
func (a *App) Repository(ctx context.Context, installationID, id int64, fullName string) (Repository, error) {
	gh := a.installation(installationID)
	var (
		r    *github.Repository
		resp *github.Response
		err  error
	)
	if id != 0 {
		r, resp, err = gh.Repositories.GetByID(ctx, id)
	} else {
		owner, name, ok := strings.Cut(fullName, "/")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
			return Repository{}, fmt.Errorf("repository %q: %w", fullName, ErrNotFound)
		}
		r, resp, err = gh.Repositories.Get(ctx, owner, name)
	}
	if err != nil {
		return Repository{}, a.installationError(ctx, installationID, fmt.Sprintf("repository %d %q", id, fullName), resp, err)
	}
	return repository(r), nil
}

// Commit is the head of a branch.
type Commit struct {
	SHA     string
	Message string
}

// BranchHead is the commit a branch of the repository points at.
func (a *App) BranchHead(ctx context.Context, installationID int64, fullName, branch string) (Commit, error) {
	owner, name, _ := strings.Cut(fullName, "/")
	// No redirects: a renamed branch answers 301, and building whatever
	// it now is would not be the branch the person chose.
	b, resp, err := a.installation(installationID).Repositories.GetBranch(ctx, owner, name, branch, 0)
	if err != nil {
		// GetBranch reports GitHub's answer as a bare status, not an
		// ErrorResponse.
		switch {
		case resp != nil && resp.StatusCode == http.StatusMovedPermanently:
			return Commit{}, fmt.Errorf("branch %q of %s was renamed: %w", branch, fullName, ErrNotFound)
		case resp != nil && resp.StatusCode == http.StatusNotFound:
			return Commit{}, fmt.Errorf("branch %q of %s: %w", branch, fullName, ErrNotFound)
		}
		return Commit{}, a.installationError(ctx, installationID, fmt.Sprintf("branch %q of %s", branch, fullName), resp, err)
	}
	return Commit{SHA: b.GetCommit().GetSHA(), Message: b.GetCommit().GetCommit().GetMessage()}, nil
}

// Branch is a branch of a repository and the commit it points at.
type Branch struct {
	Name string
	SHA  string
}

// BranchPage is one page of GitHub's list of branches, with GitHub's paging.
type BranchPage struct {
	Branches []Branch
	NextPage int // 0 on the last page
}

// Branches lists a page of a repository's branches, in GitHub's order (by
// name); page counts from 1 and perPage is at most 100, as on GitHub. A
// repository the installation cannot see is ErrNotFound.
func (a *App) Branches(ctx context.Context, installationID int64, fullName string, page, perPage int) (BranchPage, error) {
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return BranchPage{}, fmt.Errorf("repository %q: %w", fullName, ErrNotFound)
	}
	list, resp, err := a.installation(installationID).Repositories.ListBranches(ctx, owner, name,
		&github.BranchListOptions{ListOptions: github.ListOptions{Page: page, PerPage: perPage}})
	if err != nil {
		return BranchPage{}, a.installationError(ctx, installationID, fmt.Sprintf("branches of %s", fullName), resp, err)
	}
	out := BranchPage{NextPage: resp.NextPage}
	for _, b := range list {
		out.Branches = append(out.Branches, Branch{Name: b.GetName(), SHA: b.GetCommit().GetSHA()})
	}
	return out, nil
}

// CommitInfo is what a deployment shows of a commit: its message, and the
// branch it is the head of (preferring prefer, "" when it heads none).
type CommitInfo struct {
	Message string
	Branch  string
}

// DescribeCommit reads a commit of a repository and the branches it heads.
// A commit GitHub does not know (its 422) or in a repository the
// installation cannot see is ErrNotFound.
func (a *App) DescribeCommit(ctx context.Context, installationID int64, fullName, sha, prefer string) (CommitInfo, error) {
	owner, name, _ := strings.Cut(fullName, "/")
	gh := a.installation(installationID)
	what := fmt.Sprintf("commit %s of %s", sha, fullName)
	c, resp, err := gh.Repositories.GetCommit(ctx, owner, name, sha, nil)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnprocessableEntity {
			return CommitInfo{}, fmt.Errorf("%s: %w", what, ErrNotFound)
		}
		return CommitInfo{}, a.installationError(ctx, installationID, what, resp, err)
	}
	out := CommitInfo{Message: c.GetCommit().GetMessage()}
	heads, resp, err := gh.Repositories.ListBranchesHeadCommit(ctx, owner, name, c.GetSHA())
	if err != nil {
		return CommitInfo{}, a.installationError(ctx, installationID, "branches headed by "+what, resp, err)
	}
	for _, h := range heads {
		if out.Branch == "" || h.GetName() == prefer {
			out.Branch = h.GetName()
		}
	}
	return out, nil
}

// installationError classifies the failure of a call made with an
// installation's token. GitHub answers 401 to a token it no longer takes:
// the installation was suspended or deleted since the token was minted.
// The App's JWT then says which, and the cached token is dropped so that
// the next call mints a new one (which fails while suspended).
func (a *App) installationError(ctx context.Context, installationID int64, what string, resp *github.Response, err error) error {
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		return classify(what, err)
	}
	a.mu.Lock()
	delete(a.insts, installationID)
	a.mu.Unlock()
	in, ierr := a.Installation(ctx, installationID)
	switch {
	case ierr != nil:
		return fmt.Errorf("%s: %w", what, ierr)
	case in.Suspended:
		return fmt.Errorf("%s: %w", what, ErrSuspended)
	}
	return fmt.Errorf("%s: %w: GitHub refused the installation's token", what, ErrUnavailable)
}

// classify turns what a call to GitHub returned into the package's
// sentinels.
func classify(what string, err error) error {
	var he *ghinstallation.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		// ghinstallation leaves the body of a failed mint to its caller.
		_ = he.Response.Body.Close()
		// Minting the installation's token failed: GitHub answers 403 for
		// a suspended installation and 404 for one that is gone.
		switch he.Response.StatusCode {
		case http.StatusForbidden:
			return fmt.Errorf("%s: %w", what, ErrSuspended)
		case http.StatusNotFound:
			return fmt.Errorf("%s: installation %d: %w", what, he.InstallationID, ErrNotFound)
		}
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	var ge *github.ErrorResponse
	if errors.As(err, &ge) && ge.Response != nil {
		switch ge.Response.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", what, ErrNotFound)
		case http.StatusUnauthorized, http.StatusForbidden:
			// A user token GitHub no longer takes, or a repository the
			// installation has no permission for.
			return fmt.Errorf("%s: %w (GitHub answered %d)", what, ErrNotFound, ge.Response.StatusCode)
		}
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}
