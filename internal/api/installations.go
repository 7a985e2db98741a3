package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/project"
)

// installCookie binds an installation's state to the browser and the user
// that started it; its path keeps it off every other request.
const (
	githubSetupPath   = "/v1/github/setup"
	installCookie     = "zw_install_state"
	installCookiePath = githubSetupPath
)

func (a *API) registerGitHubApp(api huma.API) {
	if a.App == nil {
		return
	}
	tags := []string{"github"}
	huma.Register(api, huma.Operation{
		OperationID: "github-install", Method: http.MethodGet, Path: "/v1/github/install", Tags: tags, Security: signedIn,
		Summary:       "Install the GitHub App",
		Description:   "Redirects the browser to GitHub to install the App on an account, which sends it back to /v1/github/setup. The installation is linked to `organisation_id` (your only organisation when absent); `next` is where the browser lands afterwards, a path on this site.",
		DefaultStatus: http.StatusFound,
	}, a.githubInstall)
	huma.Register(api, huma.Operation{
		OperationID: "github-setup", Method: http.MethodGet, Path: githubSetupPath, Tags: tags, Security: signedIn,
		Summary:       "GitHub's return from an installation",
		Description:   "Where GitHub sends the browser after an installation (the App requests user authorization during installation, so a `code` comes along). Checks the state against the browser's, proves with the code that your GitHub account may use the installation, records it and redirects to `next`.",
		DefaultStatus: http.StatusFound,
	}, a.githubSetup)
	huma.Register(api, huma.Operation{
		OperationID: "list-github-installations", Method: http.MethodGet, Path: "/v1/github/installations", Tags: tags, Security: signedIn,
		Summary: "List GitHub installations", Description: "The App's installations linked to your organisations, oldest first.",
	}, a.listInstallations)
	huma.Register(api, huma.Operation{
		OperationID: "list-github-repositories", Method: http.MethodGet, Path: "/v1/github/installations/{installation_id}/repositories", Tags: tags, Security: signedIn,
		Summary:     "List an installation's repositories",
		Description: "The repositories the installation can see, as GitHub lists them now (in GitHub's order, with GitHub's paging: next_cursor carries GitHub's next page).",
	}, a.listInstallationRepositories)
	huma.Register(api, huma.Operation{
		OperationID: "list-github-branches", Method: http.MethodGet, Path: "/v1/github/installations/{installation_id}/repositories/{repository_id}/branches", Tags: tags, Security: signedIn,
		Summary:     "List a repository's branches",
		Description: "The branches of a repository the installation can see, read as the installation now (by name, with GitHub's paging: next_cursor carries GitHub's next page).",
	}, a.listRepositoryBranches)
	huma.Register(api, huma.Operation{
		OperationID: "connect-repository", Method: http.MethodPut, Path: "/v1/projects/{id}/repository", Tags: []string{"projects"}, Security: signedIn,
		Summary:     "Connect a repository",
		Description: "Connects a repository of one of the organisation's installations to the project, or changes it, its production branch or root directory. Pushes to the branch deploy from then on.",
	}, a.connectRepository)
	huma.Register(api, huma.Operation{
		OperationID: "disconnect-repository", Method: http.MethodDelete, Path: "/v1/projects/{id}/repository", Tags: []string{"projects"}, Security: signedIn,
		Summary: "Disconnect the repository", Description: "Pushes no longer deploy the project; its deployments stay.",
	}, a.disconnectRepository)
}

type githubInstallInput struct {
	OrganisationID string `query:"organisation_id" format:"uuid" doc:"the organisation to link the installation to; required when you belong to several"`
	Next           string `query:"next" doc:"a path on this site to land on afterwards, e.g. /projects/new"`
}

func (a *API) githubInstall(ctx context.Context, in *githubInstallInput) (*redirectOutput, error) {
	next := in.Next
	if next == "" {
		next = "/"
	}
	if !localPath(next) {
		return nil, huma.Error400BadRequest("next must be a path on this site, such as /projects")
	}
	org := uuid.Nil
	if in.OrganisationID != "" {
		var err error
		if org, err = uuid.Parse(in.OrganisationID); err != nil {
			return nil, huma.Error422UnprocessableEntity("organisation_id is not a UUID")
		}
	}
	// Checked now, so that nobody installs on GitHub only to be refused
	// on the way back.
	if _, err := a.Projects.Organisation(ctx, principal(ctx).UserID, org); err != nil {
		return nil, problem(err)
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	state := base64.RawURLEncoding.EncodeToString(b)
	value := strings.Join([]string{state, principal(ctx).UserID.String(), in.OrganisationID, base64.RawURLEncoding.EncodeToString([]byte(next))}, ".")
	return &redirectOutput{Location: a.App.InstallURL(state), SetCookie: []http.Cookie{a.installCookie(value, stateTTL)}}, nil
}

func (a *API) installCookie(value string, ttl time.Duration) http.Cookie {
	c := http.Cookie{Name: installCookie, Value: value, Path: installCookiePath, HttpOnly: true, Secure: !a.Dev, SameSite: http.SameSiteLaxMode, MaxAge: int(ttl.Seconds())}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}

type githubSetupInput struct {
	InstallationID int64  `query:"installation_id"`
	SetupAction    string `query:"setup_action" doc:"install, update, or request (an organisation owner must approve)"`
	State          string `query:"state"`
	Code           string `query:"code" doc:"a code for your GitHub account, to prove it may use the installation"`
	Cookie         string `cookie:"zw_install_state"`
}

// installState is what the install cookie carries.
type installState struct {
	state string
	user  uuid.UUID
	org   uuid.UUID // uuid.Nil: the user's only organisation
	next  string
}

func parseInstallState(cookie string) (installState, bool) {
	f := strings.Split(cookie, ".")
	if len(f) != 4 || f[0] == "" {
		return installState{}, false
	}
	s := installState{state: f[0]}
	var err error
	if s.user, err = uuid.Parse(f[1]); err != nil {
		return installState{}, false
	}
	if f[2] != "" {
		if s.org, err = uuid.Parse(f[2]); err != nil {
			return installState{}, false
		}
	}
	next, err := base64.RawURLEncoding.DecodeString(f[3])
	if s.next = string(next); err != nil || !localPath(s.next) {
		return installState{}, false
	}
	return s, true
}

func (a *API) githubSetup(ctx context.Context, in *githubSetupInput) (*redirectOutput, error) {
	user := principal(ctx).UserID
	st, ok := parseInstallState(in.Cookie)
	switch {
	case in.Cookie == "":
		return nil, huma.Error400BadRequest("this browser did not start an installation (or it took longer than 10 minutes): start again at /v1/github/install")
	case !ok || st.user != user || subtle.ConstantTimeCompare([]byte(st.state), []byte(in.State)) != 1:
		return nil, huma.Error400BadRequest("the installation's state does not match this browser's: start again at /v1/github/install")
	}
	done := &redirectOutput{Location: st.next, SetCookie: []http.Cookie{a.installCookie("", 0)}}
	if in.SetupAction == "request" {
		return done, nil // nothing installed yet: an owner of the GitHub organisation approves first
	}
	switch {
	case in.InstallationID <= 0:
		return nil, huma.Error400BadRequest("GitHub sent no installation_id")
	case in.Code == "":
		return nil, huma.Error400BadRequest("GitHub sent no code: the App must request user authorization (OAuth) during installation")
	case a.GitHub == nil:
		return nil, huma.Error503ServiceUnavailable("GitHub sign-in is not configured, so installations cannot be verified")
	}
	conf := a.GitHub.oauth()
	tok, err := conf.Exchange(ctx, in.Code)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			return nil, huma.Error400BadRequest("GitHub refused the installation's code (" + re.ErrorCode + "): start again at /v1/github/install")
		}
		return nil, huma.Error502BadGateway("cannot reach GitHub", err)
	}
	// The installation id comes from the browser: only GitHub, asked as
	// this user, says whether the user may use it.
	may, err := a.App.UserCanUse(ctx, conf.Client(ctx, tok), in.InstallationID)
	if err != nil && !errors.Is(err, githubapp.ErrNotFound) {
		return nil, githubProblem(err)
	}
	if !may {
		return nil, huma.Error403Forbidden(fmt.Sprintf("your GitHub account cannot use installation %d", in.InstallationID))
	}
	gi, err := a.App.Installation(ctx, in.InstallationID)
	if err != nil {
		return nil, githubProblem(err)
	}
	if _, err := a.Projects.RecordInstallation(ctx, user, st.org, project.GitHubInstallation{
		ID: gi.ID, AccountLogin: gi.AccountLogin, AccountType: gi.AccountType, Suspended: gi.Suspended,
	}); err != nil {
		return nil, installationProblem(err)
	}
	return done, nil
}

// Installation is an installation of the GitHub App as the API shows it.
type Installation struct {
	ID             int64     `json:"id" doc:"GitHub's installation id"`
	OrganisationID uuid.UUID `json:"organisation_id" format:"uuid"`
	AccountLogin   string    `json:"account_login" doc:"the GitHub user or organisation it is installed on"`
	AccountType    string    `json:"account_type" enum:"User,Organization"`
	Suspended      bool      `json:"suspended" doc:"a suspended installation neither connects nor deploys"`
	CreatedAt      time.Time `json:"created_at"`
}

type listInstallationsOutput struct {
	Body struct {
		Items      []Installation `json:"items"`
		NextCursor string         `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listInstallations(ctx context.Context, in *page) (*listInstallationsOutput, error) {
	after, err := in.after()
	if err != nil {
		return nil, err
	}
	ins, err := a.Projects.Installations(ctx, principal(ctx).UserID, after, in.fetch())
	if err != nil {
		return nil, err
	}
	ins, next := cut(*in, ins, func(i project.Installation) uuid.UUID { return i.ID })
	out := &listInstallationsOutput{}
	out.Body.Items = make([]Installation, len(ins))
	for i, x := range ins {
		out.Body.Items[i] = Installation{ID: x.GitHubID, OrganisationID: x.OrganisationID, AccountLogin: x.AccountLogin,
			AccountType: x.AccountType, Suspended: x.Suspended, CreatedAt: x.CreatedAt}
	}
	out.Body.NextCursor = next
	return out, nil
}

// GitHubRepository is a repository an installation can see.
type GitHubRepository struct {
	ID            int64  `json:"id" doc:"GitHub's repository id"`
	FullName      string `json:"full_name" doc:"owner/name"`
	Private       bool   `json:"private"`
	DefaultBranch string `json:"default_branch"`
	HTMLURL       string `json:"html_url"`
}

type listRepositoriesInput struct {
	InstallationID int64  `path:"installation_id" doc:"GitHub's installation id"`
	Cursor         string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit          int    `query:"limit" minimum:"1" maximum:"100" default:"30" doc:"at most this many items (GitHub's per_page)"`
}

type listRepositoriesOutput struct {
	Body struct {
		Items      []GitHubRepository `json:"items"`
		TotalCount int                `json:"total_count" doc:"how many repositories the installation can see, as GitHub counts them"`
		NextCursor string             `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listInstallationRepositories(ctx context.Context, in *listRepositoriesInput) (*listRepositoriesOutput, error) {
	inst, err := a.Projects.Installation(ctx, principal(ctx).UserID, in.InstallationID)
	if err != nil {
		if errors.Is(err, project.ErrInstallationNotFound) {
			return nil, huma.Error404NotFound("no such installation")
		}
		return nil, err
	}
	if inst.Suspended {
		return nil, installationProblem(fmt.Errorf("%w: installation %d", project.ErrInstallationSuspended, inst.GitHubID))
	}
	pg, err := githubPage(in.Cursor)
	if err != nil {
		return nil, err
	}
	page, err := a.App.Repositories(ctx, inst.GitHubID, pg, in.Limit)
	if err != nil {
		return nil, githubProblem(err)
	}
	out := &listRepositoriesOutput{}
	out.Body.Items = make([]GitHubRepository, len(page.Repositories))
	for i, r := range page.Repositories {
		out.Body.Items[i] = GitHubRepository{ID: r.ID, FullName: r.FullName, Private: r.Private, DefaultBranch: r.DefaultBranch, HTMLURL: r.HTMLURL}
	}
	out.Body.TotalCount = page.Total
	out.Body.NextCursor = githubCursor(page.NextPage)
	return out, nil
}

// githubPage is the GitHub page number a cursor carries: GitHub's paging,
// opaque to clients. The first page has no cursor.
func githubPage(cursor string) (int, error) {
	if cursor == "" {
		return 1, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	n, perr := strconv.Atoi(string(b))
	if err != nil || perr != nil || n < 2 || n > 100_000 {
		return 0, huma.Error400BadRequest("cursor is not one this API handed out")
	}
	return n, nil
}

// githubCursor is the cursor of GitHub's next page, "" on the last.
func githubCursor(next int) string {
	if next <= 0 {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(next)))
}

// GitHubBranch is a branch of a repository and the commit it points at.
type GitHubBranch struct {
	Name      string `json:"name"`
	CommitSHA string `json:"commit_sha"`
}

type listBranchesInput struct {
	InstallationID int64  `path:"installation_id" doc:"GitHub's installation id"`
	RepositoryID   int64  `path:"repository_id" doc:"GitHub's repository id"`
	Cursor         string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit          int    `query:"limit" minimum:"1" maximum:"100" default:"100" doc:"at most this many items (GitHub's per_page)"`
}

type listBranchesOutput struct {
	Body struct {
		Items      []GitHubBranch `json:"items"`
		NextCursor string         `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listRepositoryBranches(ctx context.Context, in *listBranchesInput) (*listBranchesOutput, error) {
	inst, err := a.Projects.Installation(ctx, principal(ctx).UserID, in.InstallationID)
	if err != nil {
		if errors.Is(err, project.ErrInstallationNotFound) {
			return nil, huma.Error404NotFound("no such installation")
		}
		return nil, err
	}
	if inst.Suspended {
		return nil, installationProblem(fmt.Errorf("%w: installation %d", project.ErrInstallationSuspended, inst.GitHubID))
	}
	pg, err := githubPage(in.Cursor)
	if err != nil {
		return nil, err
	}
	// By id, as the installation: a repository it cannot see is GitHub's
	// 404, and its current name is the one to list branches by.
	repo, err := a.App.Repository(ctx, inst.GitHubID, in.RepositoryID, "")
	if errors.Is(err, githubapp.ErrNotFound) {
		return nil, huma.Error404NotFound("the installation can see no such repository")
	}
	if err != nil {
		return nil, githubProblem(err)
	}
	page, err := a.App.Branches(ctx, inst.GitHubID, repo.FullName, pg, in.Limit)
	if errors.Is(err, githubapp.ErrNotFound) {
		return nil, huma.Error404NotFound("the installation can see no such repository")
	}
	if err != nil {
		return nil, githubProblem(err)
	}
	out := &listBranchesOutput{}
	out.Body.Items = make([]GitHubBranch, len(page.Branches))
	for i, b := range page.Branches {
		out.Body.Items[i] = GitHubBranch{Name: b.Name, CommitSHA: b.SHA}
	}
	out.Body.NextCursor = githubCursor(page.NextPage)
	return out, nil
}

// RepositoryInput says which repository to connect and how production
// builds from it.
type RepositoryInput struct {
	InstallationID int64  `json:"installation_id" minimum:"1" doc:"GitHub's id of an installation linked to the project's organisation"`
	RepositoryID   int64  `json:"repository_id,omitempty" doc:"GitHub's repository id; or give full_name"`
	FullName       string `json:"full_name,omitempty" maxLength:"200" doc:"owner/name; or give repository_id"`
	Branch         string `json:"branch,omitempty" maxLength:"255" doc:"the production branch; the repository's default branch when absent"`
	RootDirectory  string `json:"root_directory,omitempty" maxLength:"1024" doc:"the directory inside the repository to build, e.g. apps/web; the root when absent"`
}

// resolveRepository checks, as the installation, that it can see the
// repository and the branch, and returns what to connect with the branch's
// head. Nothing is written.
func (a *API) resolveRepository(ctx context.Context, in RepositoryInput) (project.Repository, githubapp.Commit, error) {
	var none githubapp.Commit
	if a.App == nil {
		return project.Repository{}, none, huma.Error503ServiceUnavailable("the GitHub App is not configured: repositories cannot be connected")
	}
	if (in.RepositoryID == 0) == (in.FullName == "") {
		return project.Repository{}, none, huma.Error422UnprocessableEntity("give repository_id or full_name (one of them)")
	}
	if in.Branch != "" {
		if err := project.ValidBranch(in.Branch); err != nil {
			return project.Repository{}, none, problem(err)
		}
	}
	if _, err := project.CleanRootDirectory(in.RootDirectory); err != nil {
		return project.Repository{}, none, problem(err)
	}
	inst, err := a.Projects.Installation(ctx, principal(ctx).UserID, in.InstallationID)
	if err != nil {
		return project.Repository{}, none, installationProblem(err)
	}
	if inst.Suspended {
		return project.Repository{}, none, installationProblem(fmt.Errorf("%w: installation %d", project.ErrInstallationSuspended, inst.GitHubID))
	}
	r, err := a.App.Repository(ctx, inst.GitHubID, in.RepositoryID, in.FullName)
	if errors.Is(err, githubapp.ErrNotFound) {
		return project.Repository{}, none, huma.Error422UnprocessableEntity(fmt.Sprintf("installation %d cannot see that repository: grant the App access to it on GitHub", inst.GitHubID))
	}
	if err != nil {
		return project.Repository{}, none, githubProblem(err)
	}
	branch := in.Branch
	if branch == "" {
		branch = r.DefaultBranch
	}
	head, err := a.App.BranchHead(ctx, inst.GitHubID, r.FullName, branch)
	if errors.Is(err, githubapp.ErrNotFound) {
		return project.Repository{}, none, huma.Error422UnprocessableEntity(fmt.Sprintf("%s has no branch %q", r.FullName, branch))
	}
	if err != nil {
		return project.Repository{}, none, githubProblem(err)
	}
	return project.Repository{Installation: inst, ID: r.ID, FullName: r.FullName, Branch: branch, RootDirectory: in.RootDirectory}, head, nil
}

// createProjectFromRepository creates the project, connected to the
// repository, and the deployment of its branch's head with its build task,
// in one transaction: no project without its first deployment, and no
// deployment without its project.
func (a *API) createProjectFromRepository(ctx context.Context, n project.New, in RepositoryInput) (*projectOutput, error) {
	user := principal(ctx).UserID
	repo, head, err := a.resolveRepository(ctx, in)
	if err != nil {
		return nil, err
	}
	var p project.Project
	err = pgx.BeginFunc(ctx, a.Projects.DB, func(tx pgx.Tx) error {
		var err error
		if p, err = (project.Store{DB: tx}).CreateWithRepository(ctx, user, n, repo); err != nil {
			return err
		}
		src := build.Source{CommitSHA: head.SHA, Ref: "refs/heads/" + repo.Branch, CommitMessage: strings.ReplaceAll(head.Message, "\x00", "")}
		_, err = build.Request(ctx, tx, a.Deploys.Queue, p.ID, src, &user)
		return err
	})
	switch {
	case errors.Is(err, build.ErrInvalidSource):
		return nil, huma.Error502BadGateway("GitHub described the branch's head in a way that cannot be built", err)
	case err != nil:
		return nil, installationProblem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}

type connectRepositoryInput struct {
	ID   string `path:"id"`
	Body RepositoryInput
}

func (a *API) connectRepository(ctx context.Context, in *connectRepositoryInput) (*projectOutput, error) {
	user := principal(ctx).UserID
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("no such project")
	}
	// Seen first, so that a stranger learns nothing of installations.
	if _, err := a.Projects.Get(ctx, user, id); err != nil {
		return nil, problem(err)
	}
	repo, _, err := a.resolveRepository(ctx, in.Body)
	if err != nil {
		return nil, err
	}
	p, err := a.Projects.ConnectRepository(ctx, user, id, repo)
	if err != nil {
		return nil, installationProblem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}

func (a *API) disconnectRepository(ctx context.Context, in *idInput) (*projectOutput, error) {
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("no such project")
	}
	p, err := a.Projects.DisconnectRepository(ctx, principal(ctx).UserID, id)
	if err != nil {
		return nil, problem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}

// installationProblem renders the installation errors of the project
// store; the rest as problem does.
func installationProblem(err error) error {
	switch {
	case errors.Is(err, project.ErrInstallationNotFound):
		return huma.Error422UnprocessableEntity("installation_id names no installation of your organisations: install the App first (/v1/github/install)")
	case errors.Is(err, project.ErrInstallationSuspended):
		return huma.Error409Conflict("the installation is suspended on GitHub: unsuspend it there first")
	case errors.Is(err, project.ErrInstallationTaken):
		return huma.Error409Conflict("the installation is linked to an organisation you do not belong to")
	}
	return problem(err)
}

// githubProblem renders what GitHub answered.
func githubProblem(err error) error {
	switch {
	case errors.Is(err, githubapp.ErrSuspended):
		return huma.Error409Conflict("the installation is suspended on GitHub: unsuspend it there first")
	case errors.Is(err, githubapp.ErrNotFound):
		return huma.Error404NotFound("GitHub knows no such installation")
	}
	return huma.Error502BadGateway("GitHub did not answer as expected; try again", err)
}
