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
		// How it is built and runs, as PATCH takes them: given here, they
		// apply to the first deployment too.
		DockerfilePath  *string `json:"dockerfile_path,omitempty" maxLength:"1024" doc:"the Dockerfile to build with, relative to root_directory; absent: detect how to build"`
		Port            *int32  `json:"port,omitempty" minimum:"1" maximum:"65535" doc:"the port the app listens on; 8080 when absent"`
		Replicas        *int32  `json:"replicas,omitempty" minimum:"3" maximum:"100" doc:"instances of each deployment; 3 when absent"`
		CPUMillis       *int32  `json:"cpu_millis,omitempty" minimum:"10" maximum:"64000" doc:"CPU per instance, in thousandths of a core; 1000 when absent"`
		MemoryMB        *int32  `json:"memory_mb,omitempty" minimum:"16" maximum:"262144" doc:"memory per instance, in MiB; 512 when absent"`
		HealthCheckPath *string `json:"health_check_path,omitempty" maxLength:"1024" doc:"the path an instance must answer with a 2xx or 3xx before it takes traffic; / when absent"`
	}
}

type projectOutput struct{ Body Project }

func (a *API) createProject(ctx context.Context, in *createProjectInput) (*projectOutput, error) {
	b := in.Body
	n := project.New{Name: b.Name, Slug: b.Slug, Organisation: b.OrganisationID, Settings: project.Patch{
		DockerfilePath: b.DockerfilePath, Port: b.Port, Replicas: b.Replicas, CPUMillis: b.CPUMillis, MemoryMB: b.MemoryMB, HealthCheckPath: b.HealthCheckPath,
	}}
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
