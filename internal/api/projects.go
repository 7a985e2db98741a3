package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/project"
)

func (a *API) registerProjects(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "create-project", Method: http.MethodPost, Path: "/v1/projects", Tags: []string{"projects"}, Security: signedIn,
		Summary: "Create a project", DefaultStatus: http.StatusCreated,
	}, a.createProject)
	huma.Register(api, huma.Operation{
		OperationID: "list-projects", Method: http.MethodGet, Path: "/v1/projects", Tags: []string{"projects"}, Security: signedIn,
		Summary: "List projects", Description: "The projects of every organisation you belong to, oldest first.",
	}, a.listProjects)
	huma.Register(api, huma.Operation{
		OperationID: "get-project", Method: http.MethodGet, Path: "/v1/projects/{id}", Tags: []string{"projects"}, Security: signedIn,
		Summary: "Get a project",
	}, a.getProject)
}

// Project is a project as the API shows it.
type Project struct {
	ID                 uuid.UUID  `json:"id" format:"uuid"`
	OrganisationID     uuid.UUID  `json:"organisation_id" format:"uuid"`
	Slug               string     `json:"slug" doc:"the first label of the project's host name"`
	Name               string     `json:"name"`
	Repository         string     `json:"repository" doc:"owner/name on GitHub; empty when none is connected"`
	Branch             string     `json:"branch" doc:"the production branch"`
	RootDirectory      string     `json:"root_directory"`
	DockerfilePath     string     `json:"dockerfile_path" doc:"the Dockerfile builds use, relative to root_directory; empty: detected"`
	Port               int32      `json:"port"`
	Replicas           int32      `json:"replicas"`
	CPUMillis          int32      `json:"cpu_millis"`
	MemoryMB           int32      `json:"memory_mb"`
	HealthCheckPath    string     `json:"health_check_path"`
	ActiveDeploymentID *uuid.UUID `json:"active_deployment_id" format:"uuid" doc:"the deployment serving the project's host; null before the first"`
	CreatedAt          time.Time  `json:"created_at"`
	UpdatedAt          time.Time  `json:"updated_at"`
}

func projectOut(p project.Project) Project {
	return Project{
		ID: p.ID, OrganisationID: p.OrganisationID, Slug: p.Slug, Name: p.Name, Repository: p.Repository, Branch: p.Branch,
		RootDirectory: p.RootDirectory, DockerfilePath: p.DockerfilePath, Port: p.Port, Replicas: p.Replicas, CPUMillis: p.CPUMillis, MemoryMB: p.MemoryMB,
		HealthCheckPath: p.HealthCheckPath, ActiveDeploymentID: p.ActiveDeploymentID, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

type createProjectInput struct {
	Body struct {
		Name           string    `json:"name" minLength:"1" maxLength:"100"`
		Slug           string    `json:"slug,omitempty" maxLength:"63" doc:"lower-case letters, digits and hyphens, not shaped like a UUID; made from the name when absent"`
		OrganisationID uuid.UUID `json:"organisation_id,omitempty" format:"uuid" doc:"required when you belong to several organisations"`
		// Repository makes the project with its first deployment.
		Repository *RepositoryInput `json:"repository,omitempty" doc:"a GitHub repository to connect; the head of its branch is built and deployed at once"`
	}
}

type projectOutput struct{ Body Project }

func (a *API) createProject(ctx context.Context, in *createProjectInput) (*projectOutput, error) {
	n := project.New{Name: in.Body.Name, Slug: in.Body.Slug, Organisation: in.Body.OrganisationID}
	if in.Body.Repository != nil {
		return a.createProjectFromRepository(ctx, n, *in.Body.Repository)
	}
	p, err := a.Projects.Create(ctx, principal(ctx).UserID, n)
	if err != nil {
		return nil, problem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}

type listProjectsOutput struct {
	Body struct {
		Items      []Project `json:"items"`
		NextCursor string    `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listProjects(ctx context.Context, in *page) (*listProjectsOutput, error) {
	after, err := in.after()
	if err != nil {
		return nil, err
	}
	ps, err := a.Projects.List(ctx, principal(ctx).UserID, after, in.fetch())
	if err != nil {
		return nil, err
	}
	ps, next := cut(*in, ps, func(p project.Project) uuid.UUID { return p.ID })
	out := &listProjectsOutput{}
	out.Body.Items = make([]Project, len(ps))
	for i, p := range ps {
		out.Body.Items[i] = projectOut(p)
	}
	out.Body.NextCursor = next
	return out, nil
}

func (a *API) getProject(ctx context.Context, in *idInput) (*projectOutput, error) {
	id, err := uuid.Parse(in.ID)
	if err != nil {
		return nil, huma.Error404NotFound("no such project")
	}
	p, err := a.Projects.Get(ctx, principal(ctx).UserID, id)
	if err != nil {
		return nil, problem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}
