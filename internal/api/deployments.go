package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Deploys is what the deployment operations need.
type Deploys struct {
	DB db.Conn
	// Queue takes a new deployment's build task in the transaction that
	// creates the deployment.
	Queue Queue
	// AppsDomain hosts <deployment-id>.<AppsDomain> and <slug>.<AppsDomain>.
	AppsDomain string
	// AppsURL is AppsDomain as a browser reaches it, scheme://AppsDomain[:port];
	// https://AppsDomain when empty.
	AppsURL string
}

// appURL is where <label>.<AppsDomain> answers a browser.
func (d Deploys) appURL(label string) string {
	scheme, host := "https", d.AppsDomain
	if u, err := url.Parse(d.AppsURL); d.AppsURL != "" && err == nil {
		scheme, host = u.Scheme, u.Host
	}
	return scheme + "://" + label + "." + host
}

// Queue adds a task as part of a transaction; *queue.Queue is one.
type Queue interface {
	EnqueueTx(ctx context.Context, tx pgx.Tx, task queue.Task) (int64, error)
}

// maxInstances bounds a deployment's instance list: replicas are few, and
// the failed instances that replaced each other are kept only for a while.
const maxInstances = 500

func (a *API) registerDeployments(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "create-deployment", Method: http.MethodPost, Path: "/v1/deployments", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "Deploy", DefaultStatus: http.StatusCreated,
		Description: "Builds and deploys a commit of the project's connected repository, or an archive uploaded under `uploads/<project_id>/`.",
	}, a.createDeployment)
	huma.Register(api, huma.Operation{
		OperationID: "list-deployments", Method: http.MethodGet, Path: "/v1/deployments", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "List deployments", Description: "The deployments of one project, or of every project you can see, newest first; production deployments and previews, or one of them.",
	}, a.listDeployments)
	huma.Register(api, huma.Operation{
		OperationID: "get-deployment", Method: http.MethodGet, Path: "/v1/deployments/{id}", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "Get a deployment",
	}, a.getDeployment)
	huma.Register(api, huma.Operation{
		OperationID: "list-deployment-instances", Method: http.MethodGet, Path: "/v1/deployments/{id}/instances", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "List a deployment's instances", Description: "Every instance of the deployment, newest first, with its node and state.",
	}, a.listDeploymentInstances)
}

// Deployment is a deployment as the API shows it.
type Deployment struct {
	ID            uuid.UUID        `json:"id" format:"uuid"`
	ProjectID     uuid.UUID        `json:"project_id" format:"uuid"`
	Status        deploymentStatus `json:"status"`
	FailureReason string           `json:"failure_reason,omitempty" doc:"why it failed; only when failed"`
	SourceType    sourceType       `json:"source_type"`
	CommitSHA     string           `json:"commit_sha,omitempty"`
	CommitMessage string           `json:"commit_message,omitempty"`
	Ref           string           `json:"ref,omitempty" doc:"the git ref pushed, e.g. refs/heads/main"`
	ArchiveKey    string           `json:"archive_key,omitempty" doc:"the uploaded archive's object key"`
	Framework     string           `json:"framework,omitempty" doc:"what its build detected; absent until a build did"`
	Replicas      int32            `json:"replicas"`
	Environment   environment      `json:"environment" doc:"production: pushes to the project's branch and deploys through the API, live at the project's hosts when active; preview: pushes to other branches, live only at their own url"`
	Branch        string           `json:"branch,omitempty" doc:"the branch it was built from; absent for an upload"`
	PushedBy      string           `json:"pushed_by,omitempty" doc:"the GitHub login that pushed the commit; absent unless a push made it"`
	URL           string           `json:"url" doc:"where it answers: the project's host while it is the project's live deployment, else https://<id>.<apps-domain> (a preview's only host)"`
	ProjectURL    string           `json:"project_url" doc:"where the project's active deployment answers"`
	CreatedBy     *uuid.UUID       `json:"created_by" format:"uuid" doc:"the user who asked for it; null for a push"`
	CreatedAt     time.Time        `json:"created_at"`
	ActiveAt      *time.Time       `json:"active_at" doc:"when it became active; null before"`
}

// deploymentStatus, sourceType and environment document the domain's
// values as enums.
type (
	deploymentStatus deployment.Status
	sourceType       deployment.SourceType
	environment      deployment.Environment
)

func (deploymentStatus) Schema(huma.Registry) *huma.Schema { return enumSchema(deployment.Statuses) }

func (sourceType) Schema(huma.Registry) *huma.Schema { return enumSchema(deployment.SourceTypes) }

func (environment) Schema(huma.Registry) *huma.Schema { return enumSchema(deployment.Environments) }

func enumSchema[T ~string](values []T) *huma.Schema {
	s := &huma.Schema{Type: huma.TypeString}
	for _, v := range values {
		s.Enum = append(s.Enum, string(v))
	}
	return s
}

func (a *API) deploymentOut(v deployment.Visible) Deployment {
	projectURL := a.Deploys.appURL(v.ProjectSlug)
	url := a.Deploys.appURL(v.ID.String())
	// At most one production deployment of a project is active: the one
	// the project's hosts route to.
	if v.Environment == deployment.EnvironmentProduction && v.Status == deployment.StatusActive {
		url = projectURL
	}
	return Deployment{
		ID: v.ID, ProjectID: v.ProjectID, Status: deploymentStatus(v.Status), FailureReason: v.FailureReason,
		SourceType: sourceType(v.Source.Type), CommitSHA: v.Source.CommitSHA, CommitMessage: v.Source.CommitMessage,
		Ref: v.Source.Ref, ArchiveKey: v.Source.ArchiveKey, Framework: v.Framework, Replicas: v.Replicas,
		Environment: environment(v.Environment), Branch: v.Branch(), PushedBy: v.PushedBy,
		URL: url, ProjectURL: projectURL,
		CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt, ActiveAt: v.ActiveAt,
	}
}

func (a *API) deployments() deployment.Store { return deployment.Store{DB: a.Deploys.DB} }

// deploymentProblem renders the deployment store's errors.
func deploymentProblem(err error) error {
	if errors.Is(err, deployment.ErrNotFound) {
		return huma.Error404NotFound("no such deployment")
	}
	return err
}

type createDeploymentInput struct {
	Body struct {
		ProjectID  uuid.UUID `json:"project_id" format:"uuid"`
		CommitSHA  string    `json:"commit_sha,omitempty" doc:"a commit of the project's connected repository, 40 lower-case hex digits"`
		ArchiveKey string    `json:"archive_key,omitempty" doc:"an uploaded .tar.gz, under uploads/<project_id>/"`
	}
}

type deploymentOutput struct{ Body Deployment }

func (a *API) createDeployment(ctx context.Context, in *createDeploymentInput) (*deploymentOutput, error) {
	user := principal(ctx).UserID
	p, err := a.Projects.Get(ctx, user, in.Body.ProjectID)
	if errors.Is(err, project.ErrNotFound) {
		return nil, huma.Error422UnprocessableEntity("project_id names no project you can see")
	}
	if err != nil {
		return nil, err
	}
	src := build.Source{CommitSHA: in.Body.CommitSHA, ArchiveKey: in.Body.ArchiveKey}
	// Uploads land under the project's own prefix; a key elsewhere would
	// build another project's code with this project's variables.
	if prefix := "uploads/" + p.ID.String() + "/"; src.CommitSHA == "" && src.ArchiveKey != "" &&
		(!strings.HasPrefix(src.ArchiveKey, prefix) || len(src.ArchiveKey) == len(prefix)) {
		return nil, huma.Error422UnprocessableEntity("archive_key must be an object under " + prefix)
	}
	if a.Uploads != nil && src.CommitSHA == "" && src.ArchiveKey != "" {
		if _, err := a.Uploads.Check(ctx, p.ID, src.ArchiveKey); err != nil {
			return nil, a.archiveProblem(err)
		}
	}
	if src.CommitSHA != "" {
		if src.CommitMessage, src.Ref, err = a.describeCommit(ctx, p, src.CommitSHA); err != nil {
			return nil, err
		}
	}
	req, err := build.Request(ctx, a.Deploys.DB, a.Deploys.Queue, p.ID, src, &user)
	switch {
	case errors.Is(err, build.ErrInvalidSource):
		return nil, huma.Error422UnprocessableEntity(err.Error())
	case errors.Is(err, build.ErrProjectNotFound):
		return nil, huma.Error422UnprocessableEntity("project_id names no project you can see") // deleted meanwhile
	case err != nil:
		return nil, err
	}
	v, err := a.deployments().GetForMember(ctx, user, req.Deployment.ID)
	if err != nil {
		return nil, deploymentProblem(err)
	}
	return &deploymentOutput{Body: a.deploymentOut(v)}, nil
}

// describeCommit reads, through the project's GitHub App installation,
// the message of a commit to deploy and the branch it heads (the project's
// own branch when it heads several), so that the deployment shows them as
// a pushed one does. A commit GitHub does not know in the repository is a
// 422; when GitHub cannot be asked, the deployment goes ahead with the sha
// alone: the builder reports a commit it cannot fetch.
func (a *API) describeCommit(ctx context.Context, p project.Project, sha string) (message, ref string, err error) {
	if a.App == nil || !commitSHARe.MatchString(sha) || p.Repository == "" {
		return "", "", nil // nothing to ask, or build.Request refuses it
	}
	row, err := build.NewStore(a.Deploys.DB).Project(ctx, p.ID)
	if err != nil || row.GithubInstallationID == nil {
		return "", "", nil // deleted or disconnected meanwhile: build.Request says so
	}
	inst, err := db.New(a.Deploys.DB).GithubInstallationGetByID(ctx, *row.GithubInstallationID)
	if err != nil {
		return "", "", fmt.Errorf("installation of project %s: %w", p.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := a.App.DescribeCommit(ctx, inst.GithubInstallationID, p.Repository, sha, p.Branch)
	switch {
	case errors.Is(err, githubapp.ErrNotFound):
		return "", "", huma.Error422UnprocessableEntity(fmt.Sprintf("commit_sha is not a commit of %s that the GitHub App can see", p.Repository))
	case err != nil:
		a.Log.WarnContext(ctx, "deployment without its commit's message and branch: GitHub did not answer", "project", p.ID, "commit", sha, "err", err)
		return "", "", nil
	}
	if info.Branch != "" {
		ref = "refs/heads/" + info.Branch
	}
	return info.Message, ref, nil
}

var commitSHARe = regexp.MustCompile(`^[0-9a-f]{40}$`)

type listDeploymentsInput struct {
	ProjectID   string `query:"project_id" format:"uuid" doc:"only this project's; every project you can see when absent"`
	Environment string `query:"environment" enum:"production,preview" doc:"only production deployments, or only previews; both when absent"`
	// page's fields, repeated: huma does not read the parameters of an
	// unexported embedded struct.
	Cursor string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit  int32  `query:"limit" minimum:"1" maximum:"100" default:"20" doc:"at most this many items"`
}

type listDeploymentsOutput struct {
	Body struct {
		Items      []Deployment `json:"items"`
		NextCursor string       `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listDeployments(ctx context.Context, in *listDeploymentsInput) (*listDeploymentsOutput, error) {
	var project *uuid.UUID
	if in.ProjectID != "" {
		id, err := uuid.Parse(in.ProjectID)
		if err != nil {
			return nil, huma.Error422UnprocessableEntity("project_id is not a UUID")
		}
		project = &id
	}
	pg := page{Cursor: in.Cursor, Limit: in.Limit}
	// Newest first: the next page starts before the previous page's last.
	last, err := pg.after()
	if err != nil {
		return nil, err
	}
	f := deployment.MemberFilter{Project: project, Environment: deployment.Environment(in.Environment)}
	ds, err := a.deployments().ListForMember(ctx, principal(ctx).UserID, f, last, pg.fetch())
	if err != nil {
		return nil, err
	}
	ds, next := cut(pg, ds, func(d deployment.Visible) uuid.UUID { return d.ID })
	out := &listDeploymentsOutput{}
	out.Body.Items = make([]Deployment, len(ds))
	for i, d := range ds {
		out.Body.Items[i] = a.deploymentOut(d)
	}
	out.Body.NextCursor = next
	return out, nil
}

// visibleDeployment is the deployment of the path, when the caller may see it.
func (a *API) visibleDeployment(ctx context.Context, rawID string) (deployment.Visible, error) {
	id, err := uuid.Parse(rawID)
	if err != nil {
		return deployment.Visible{}, huma.Error404NotFound("no such deployment")
	}
	v, err := a.deployments().GetForMember(ctx, principal(ctx).UserID, id)
	if err != nil {
		return deployment.Visible{}, deploymentProblem(err)
	}
	return v, nil
}

func (a *API) getDeployment(ctx context.Context, in *idInput) (*deploymentOutput, error) {
	v, err := a.visibleDeployment(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &deploymentOutput{Body: a.deploymentOut(v)}, nil
}

type listInstancesOutput struct {
	Body struct {
		Items []instance.Instance `json:"items"`
	}
}

func (a *API) listDeploymentInstances(ctx context.Context, in *idInput) (*listInstancesOutput, error) {
	v, err := a.visibleDeployment(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	is, err := instance.Store{DB: a.Deploys.DB}.List(ctx, instance.Filter{DeploymentID: &v.ID, Limit: maxInstances})
	if err != nil {
		return nil, err
	}
	out := &listInstancesOutput{}
	out.Body.Items = is
	return out, nil
}
