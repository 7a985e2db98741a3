package githubemu

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// InstallOn makes the install page install the App on account (a user or
// organisation added with AddUser), as if the person picked it there. With
// "" it installs on the approving user's own account.
func (e *Emulator) InstallOn(account string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.installOn = account
}

// install plays github.com/apps/<slug>/installations/new for the user set
// with ApproveAs: it installs the App (or, when it is installed on the
// account already, opens its settings: setup_action=update) and sends the
// browser back the way the App is configured to, with state unchanged.
func (e *Emulator) install(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	if r.PathValue("slug") != e.app.Slug {
		e.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	u, known := e.users[e.approver]
	if !known || u.Organization {
		e.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "githubemu: nobody is signed in to install the App (ApproveAs)")
		return
	}
	account := cmp.Or(e.installOn, u.Login)
	acct, ok := e.users[account]
	if !ok || (account != u.Login && !(acct.Organization && slices.Contains(acct.Members, u.Login))) {
		e.mu.Unlock()
		writeError(w, http.StatusForbidden, "githubemu: "+u.Login+" cannot install the App on "+account)
		return
	}
	action := "install"
	var in *Installation
	for _, i := range e.installations {
		if i.Account == account {
			in, action = i, "update"
		}
	}
	if in == nil {
		in = &Installation{ID: e.newID(), Account: account}
		e.installations[in.ID] = in
	}
	params := url.Values{"installation_id": {strconv.FormatInt(in.ID, 10)}, "setup_action": {action}}
	to := e.app.SetupURL
	if e.app.AuthorizeOnInstall {
		to = e.app.CallbackURL
		code := randomHex(10)
		e.codes[code] = oauthCode{login: u.Login, expires: time.Now().Add(codeTTL)}
		params.Set("code", code)
	}
	e.mu.Unlock()
	if to == "" {
		writeError(w, http.StatusBadRequest, "githubemu: the App has no setup URL (or callback URL, with AuthorizeOnInstall)")
		return
	}
	back(w, r, to, r.URL.Query().Get("state"), params)
}

// visibleRepo is the repository owner/name when the installation token of
// r may see it; otherwise it has answered (401 or 404, as GitHub does).
func (e *Emulator) visibleRepo(w http.ResponseWriter, r *http.Request, match func(*Repository) bool) (*Repository, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.installationOf(w, r)
	if !ok {
		return nil, false
	}
	for _, repo := range e.reposOf(in.ID) {
		if match(repo) {
			return repo, true
		}
	}
	writeError(w, http.StatusNotFound, "Not Found") // GitHub hides private repositories this way
	return nil, false
}

func (e *Emulator) getRepo(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("owner") + "/" + r.PathValue("repo")
	if repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return strings.EqualFold(x.FullName(), name) }); ok {
		e.mu.Lock()
		defer e.mu.Unlock()
		writeJSON(w, http.StatusOK, e.repoJSON(repo, false))
	}
}

func (e *Emulator) getRepoByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return x.ID == id }); ok {
		e.mu.Lock()
		defer e.mu.Unlock()
		writeJSON(w, http.StatusOK, e.repoJSON(repo, false))
	}
}

// branchJSON is GitHub's "branch with protection".
type branchJSON struct {
	Name          string           `json:"name"`
	Commit        repoCommitJSON   `json:"commit"`
	Links         branchLinksJSON  `json:"_links"`
	Protected     bool             `json:"protected"`
	Protection    branchProtection `json:"protection"`
	ProtectionURL string           `json:"protection_url"`
}

type branchLinksJSON struct {
	Self string `json:"self"`
	HTML string `json:"html"`
}

type branchProtection struct {
	Enabled bool `json:"enabled"`
}

// repoCommitJSON is a commit as the REST API (not a push payload) shows it.
type repoCommitJSON struct {
	SHA     string          `json:"sha"`
	NodeID  string          `json:"node_id"`
	Commit  gitCommitJSON   `json:"commit"`
	URL     string          `json:"url"`
	HTMLURL string          `json:"html_url"`
	Parents []commitRefJSON `json:"parents"`
}

type gitCommitJSON struct {
	Author       gitActorJSON  `json:"author"`
	Committer    gitActorJSON  `json:"committer"`
	Message      string        `json:"message"`
	Tree         commitRefJSON `json:"tree"`
	URL          string        `json:"url"`
	CommentCount int           `json:"comment_count"`
}

type gitActorJSON struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Date  string `json:"date"`
}

type commitRefJSON struct {
	SHA string `json:"sha"`
	URL string `json:"url"`
}

// getBranch answers GET /repos/{owner}/{repo}/branches/{branch}: the
// branch and its head commit, read from the local repository.
func (e *Emulator) getBranch(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("owner") + "/" + r.PathValue("repo")
	repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return strings.EqualFold(x.FullName(), name) })
	if !ok {
		return
	}
	branch := r.PathValue("branch")
	b, err := e.branch(r.Context(), repo, branch)
	if err != nil {
		writeError(w, http.StatusNotFound, "Branch not found")
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (e *Emulator) branch(ctx context.Context, repo *Repository, branch string) (branchJSON, error) {
	if strings.HasPrefix(branch, "-") || strings.Contains(branch, "..") {
		return branchJSON{}, fmt.Errorf("bad branch %q", branch)
	}
	sha, err := resolve(ctx, repo.Dir, "refs/heads/"+branch)
	if err != nil {
		return branchJSON{}, err
	}
	out, err := git(ctx, repo.Dir, "show", "-s", "--format=%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B", sha)
	if err != nil {
		return branchJSON{}, err
	}
	f := strings.SplitN(out, "\x00", 9)
	if len(f) != 9 {
		return branchJSON{}, fmt.Errorf("git show %s: unexpected output", sha)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	api, web := e.apiBase()+"/repos/"+repo.FullName(), e.webBase()+"/"+repo.FullName()
	c := repoCommitJSON{
		SHA: sha, NodeID: nodeID("Commit", int64(len(sha))), URL: api + "/commits/" + sha, HTMLURL: web + "/commit/" + sha,
		Commit: gitCommitJSON{
			Author:    gitActorJSON{Name: f[2], Email: f[3], Date: f[4]},
			Committer: gitActorJSON{Name: f[5], Email: f[6], Date: f[7]},
			Message:   strings.TrimRight(f[8], "\n"),
			Tree:      commitRefJSON{SHA: f[0], URL: api + "/git/trees/" + f[0]},
			URL:       api + "/git/commits/" + sha,
		},
		Parents: []commitRefJSON{},
	}
	for _, p := range strings.Fields(f[1]) {
		c.Parents = append(c.Parents, commitRefJSON{SHA: p, URL: api + "/commits/" + p})
	}
	return branchJSON{
		Name: branch, Commit: c,
		Links:         branchLinksJSON{Self: api + "/branches/" + url.PathEscape(branch), HTML: web + "/tree/" + branch},
		ProtectionURL: api + "/branches/" + url.PathEscape(branch) + "/protection",
	}, nil
}
