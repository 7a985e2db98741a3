package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/zeitwork/zeitwork/internal/project"
)

func (a *API) registerProjectSettings(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "update-project", Method: http.MethodPatch, Path: "/v1/projects/{id}", Tags: []string{"projects"}, Security: signedIn,
		Summary: "Update a project's settings",
		Description: "JSON merge patch (RFC 7396): fields left out stay as they are. Every field is checked before anything is written; " +
			"a 422 names each field that is wrong. Settings apply to the next deployment: running ones keep theirs. " +
			"Changing the slug changes the project's host at once (the old host stops answering). Any member may update.",
	}, a.updateProject)
	huma.Register(api, huma.Operation{
		OperationID: "delete-project", Method: http.MethodDelete, Path: "/v1/projects/{id}", Tags: []string{"projects"}, Security: signedIn,
		Summary: "Delete a project", DefaultStatus: http.StatusNoContent,
		Description: "Stops every deployment of the project and removes it with its deployments, builds, variables and custom domains, " +
			"in one step: its hosts stop answering at once and its domains can be added to another project. " +
			"Only owners and admins of the project's organisation may delete it (403 for members).",
	}, a.deleteProject)
}

// nullable is a merge-patch field that can be left out, set to null (to
// clear the setting) or set to a value.
type nullable[T any] struct {
	Sent, Null bool
	Value      T
}

func (n *nullable[T]) UnmarshalJSON(b []byte) error {
	n.Sent = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		n.Null = true
		return nil
	}
	return json.Unmarshal(b, &n.Value)
}

// Schema is the value's; the field's nullable tag adds null.
func (n nullable[T]) Schema(r huma.Registry) *huma.Schema {
	return r.Schema(reflect.TypeFor[T](), true, "")
}

type updateProjectInput struct {
	ID string `path:"id"`
	// Fields are nullable[T] so that null is told apart from absent: only
	// dockerfile_path can be cleared; null for any other is refused.
	Body struct {
		Name            nullable[string] `json:"name,omitempty" minLength:"1" maxLength:"100"`
		Slug            nullable[string] `json:"slug,omitempty" maxLength:"63" doc:"lower-case letters, digits and hyphens, not shaped like a UUID; the host <slug>.<apps-domain> changes with it"`
		Branch          nullable[string] `json:"branch,omitempty" maxLength:"255" doc:"the production branch: pushes to it deploy the project's host"`
		RootDirectory   nullable[string] `json:"root_directory,omitempty" maxLength:"1024" doc:"the directory of the repository the app is built from, relative to its root; empty for the root"`
		DockerfilePath  nullable[string] `json:"dockerfile_path,omitempty" nullable:"true" maxLength:"1024" doc:"the Dockerfile to build with, relative to root_directory; null to detect how to build instead"`
		Port            nullable[int32]  `json:"port,omitempty" minimum:"1" maximum:"65535" doc:"the port the app listens on (it also gets it as PORT)"`
		Replicas        nullable[int32]  `json:"replicas,omitempty" minimum:"3" maximum:"100" doc:"instances of each deployment, spread over nodes"`
		CPUMillis       nullable[int32]  `json:"cpu_millis,omitempty" minimum:"10" maximum:"64000" doc:"CPU per instance, in thousandths of a core"`
		MemoryMB        nullable[int32]  `json:"memory_mb,omitempty" minimum:"16" maximum:"262144" doc:"memory per instance, in MiB"`
		HealthCheckPath nullable[string] `json:"health_check_path,omitempty" maxLength:"1024" doc:"the path an instance must answer with a 2xx or 3xx before it takes traffic"`
	}
}

// value is the field's value when one was sent, nil when it was left
// out; null is added to nulls by name.
func value[T any](nulls *[]string, name string, f nullable[T]) *T {
	switch {
	case f.Null:
		*nulls = append(*nulls, name)
		return nil
	case f.Sent:
		return &f.Value
	}
	return nil
}

func (a *API) updateProject(ctx context.Context, in *updateProjectInput) (*projectOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	b := in.Body
	var nulls []string
	patch := project.Patch{
		Name: value(&nulls, "name", b.Name), Slug: value(&nulls, "slug", b.Slug), Branch: value(&nulls, "branch", b.Branch),
		RootDirectory: value(&nulls, "root_directory", b.RootDirectory), Port: value(&nulls, "port", b.Port),
		Replicas: value(&nulls, "replicas", b.Replicas), CPUMillis: value(&nulls, "cpu_millis", b.CPUMillis),
		MemoryMB: value(&nulls, "memory_mb", b.MemoryMB), HealthCheckPath: value(&nulls, "health_check_path", b.HealthCheckPath),
		ClearDockerfilePath: b.DockerfilePath.Null,
	}
	if b.DockerfilePath.Sent && !b.DockerfilePath.Null {
		patch.DockerfilePath = &b.DockerfilePath.Value
	}
	if len(nulls) > 0 {
		return nil, huma.Error422UnprocessableEntity(strings.Join(nulls, ", ") + ": cannot be null; leave a field out to keep its value")
	}
	p, err := a.Projects.Update(ctx, principal(ctx).UserID, id, patch)
	if err != nil {
		return nil, projectProblem(err)
	}
	return &projectOutput{Body: projectOut(p)}, nil
}

func (a *API) deleteProject(ctx context.Context, in *idInput) (*struct{}, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	d, err := a.Projects.Delete(ctx, principal(ctx).UserID, id)
	if err != nil {
		return nil, projectProblem(err)
	}
	a.Log.InfoContext(ctx, "project deleted", "project_id", id, "user_id", principal(ctx).UserID,
		"deployments", d.Deployments, "instances", d.Instances, "domains", d.Domains)
	return nil, nil
}

// projectProblem renders the errors of changing a project, then the
// common ones.
func projectProblem(err error) error {
	if errors.Is(err, project.ErrForbidden) {
		return huma.Error403Forbidden(err.Error())
	}
	return problem(err)
}
