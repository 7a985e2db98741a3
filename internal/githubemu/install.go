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
	c, err := e.restCommit(ctx, repo, sha)
	if err != nil {
		return branchJSON{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	api, web := e.apiBase()+"/repos/"+repo.FullName(), e.webBase()+"/"+repo.FullName()
	return branchJSON{
		Name: branch, Commit: c,
		Links:         branchLinksJSON{Self: api + "/branches/" + url.PathEscape(branch), HTML: web + "/tree/" + branch},
		ProtectionURL: api + "/branches/" + url.PathEscape(branch) + "/protection",
	}, nil
}

// restCommit is the commit sha (already resolved) as the REST API shows it.
func (e *Emulator) restCommit(ctx context.Context, repo *Repository, sha string) (repoCommitJSON, error) {
	out, err := git(ctx, repo.Dir, "show", "-s", "--format=%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B", sha)
	if err != nil {
		return repoCommitJSON{}, err
	}
	f := strings.SplitN(out, "\x00", 9)
	if len(f) != 9 {
		return repoCommitJSON{}, fmt.Errorf("git show %s: unexpected output", sha)
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
	return c, nil
}

// shortBranchJSON is a branch as GitHub's lists show it.
type shortBranchJSON struct {
	Name      string        `json:"name"`
	Commit    commitRefJSON `json:"commit"`
	Protected bool          `json:"protected"`
}

// heads is every branch of repo with its head, by name.
func heads(ctx context.Context, repo *Repository) ([][2]string, error) {
	out, err := git(ctx, repo.Dir, "for-each-ref", "--sort=refname", "--format=%(refname:strip=2)%00%(objectname)", "refs/heads/")
	if err != nil {
		return nil, err
	}
	var hs [][2]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, sha, ok := strings.Cut(line, "\x00"); ok {
			hs = append(hs, [2]string{name, sha})
		}
	}
	return hs, nil
}

// listBranches answers GET /repos/{owner}/{repo}/branches: the branches by
// name, paged like GitHub.
func (e *Emulator) listBranches(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("owner") + "/" + r.PathValue("repo")
	repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return strings.EqualFold(x.FullName(), name) })
	if !ok {
		return
	}
	hs, err := heads(r.Context(), repo)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	api := e.apiBase() + "/repos/" + repo.FullName()
	lo, hi := e.page(w, r, len(hs))
	out := make([]shortBranchJSON, 0, hi-lo)
	for _, h := range hs[lo:hi] {
		out = append(out, shortBranchJSON{Name: h[0], Commit: commitRefJSON{SHA: h[1], URL: api + "/commits/" + h[1]}})
	}
	writeJSON(w, http.StatusOK, out)
}

// getCommit answers GET /repos/{owner}/{repo}/commits/{ref}: a commit by
// sha, branch or tag (without its files: the emulator lists none).
func (e *Emulator) getCommit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("owner") + "/" + r.PathValue("repo")
	repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return strings.EqualFold(x.FullName(), name) })
	if !ok {
		return
	}
	ref := r.PathValue("ref")
	sha, err := "", error(nil)
	if !strings.HasPrefix(ref, "-") {
		sha, err = resolve(r.Context(), repo.Dir, ref)
	}
	if sha == "" || err != nil {
		writeError(w, http.StatusUnprocessableEntity, "No commit found for SHA: "+ref)
		return
	}
	c, err := e.restCommit(r.Context(), repo, sha)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// branchesWhereHead answers GET
// /repos/{owner}/{repo}/commits/{sha}/branches-where-head: the branches
// whose head is that commit.
func (e *Emulator) branchesWhereHead(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("owner") + "/" + r.PathValue("repo")
	repo, ok := e.visibleRepo(w, r, func(x *Repository) bool { return strings.EqualFold(x.FullName(), name) })
	if !ok {
		return
	}
	hs, err := heads(r.Context(), repo)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	api := e.apiBase() + "/repos/" + repo.FullName()
	out := []shortBranchJSON{}
	for _, h := range hs {
		if h[1] == r.PathValue("sha") {
			out = append(out, shortBranchJSON{Name: h[0], Commit: commitRefJSON{SHA: h[1], URL: api + "/commits/" + h[1]}})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
