package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/project"
)

// registerEnv mounts the variable routes whether or not keys are
// configured: without SECRETS_KEYS they answer 503, so that the contract
// does not change with the configuration.
func (a *API) registerEnv(api huma.API) {
	const desc = "Answers 503 when this API has no SECRETS_KEYS."
	huma.Register(api, huma.Operation{
		OperationID: "list-env", Method: http.MethodGet, Path: "/v1/projects/{id}/env", Tags: []string{"env"}, Security: signedIn,
		Summary: "List a project's variables", Description: "Names and times only, oldest first; values are never listed. " + desc,
	}, a.listEnv)
	huma.Register(api, huma.Operation{
		OperationID: "set-env", Method: http.MethodPut, Path: "/v1/projects/{id}/env/{name}", Tags: []string{"env"}, Security: signedIn,
		Summary: "Set a variable", Description: "Creates or replaces the variable; instances started from now on see it. " +
			"environments says which deployments get it; without it a new variable goes to both and an existing one keeps its own. " + desc,
	}, a.setEnv)
	huma.Register(api, huma.Operation{
		OperationID: "get-env", Method: http.MethodGet, Path: "/v1/projects/{id}/env/{name}", Tags: []string{"env"}, Security: signedIn,
		Summary: "Reveal a variable", Description: "The one variable with its value. " + desc,
	}, a.getEnv)
	huma.Register(api, huma.Operation{
		OperationID: "delete-env", Method: http.MethodDelete, Path: "/v1/projects/{id}/env/{name}", Tags: []string{"env"}, Security: signedIn,
		Summary: "Delete a variable", DefaultStatus: http.StatusNoContent, Description: desc,
	}, a.deleteEnv)
}

// EnvVariable is a project's variable without its value.
type EnvVariable struct {
	Name         string                   `json:"name"`
	Environments []deployment.Environment `json:"environments" enum:"production,preview" doc:"the deployments whose instances get the variable"`
	CreatedAt    time.Time                `json:"created_at"`
	UpdatedAt    time.Time                `json:"updated_at"`
}

func envOut(v project.Variable) EnvVariable {
	return EnvVariable{Name: v.Name, Environments: v.Environments, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
}

// envProblem renders the variables' own errors, then the project's.
func envProblem(err error) error {
	switch {
	case errors.Is(err, project.ErrNoKeys):
		return huma.Error503ServiceUnavailable(project.ErrNoKeys.Error())
	case errors.Is(err, project.ErrNoVariable):
		return huma.Error404NotFound("no such variable")
	}
	return problem(err)
}

// projectID parses the path's project id; a malformed one names no
// project, like one that does not exist.
func projectID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, huma.Error404NotFound("no such project")
	}
	return id, nil
}

type listEnvInput struct {
	ID string `path:"id"`
	// page's fields, repeated: huma does not read the parameters of an
	// unexported embedded struct.
	Cursor string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit  int32  `query:"limit" minimum:"1" maximum:"100" default:"20" doc:"at most this many items"`
}

type listEnvOutput struct {
	Body struct {
		Items      []EnvVariable `json:"items"`
		NextCursor string        `json:"next_cursor" doc:"the cursor of the next page; empty on the last"`
	}
}

func (a *API) listEnv(ctx context.Context, in *listEnvInput) (*listEnvOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	pg := page{Cursor: in.Cursor, Limit: in.Limit}
	after, err := pg.after()
	if err != nil {
		return nil, err
	}
	vs, err := a.Variables.List(ctx, principal(ctx).UserID, id, after, pg.fetch())
	if err != nil {
		return nil, envProblem(err)
	}
	vs, next := cut(pg, vs, func(v project.Variable) uuid.UUID { return v.ID })
	out := &listEnvOutput{}
	out.Body.Items = make([]EnvVariable, len(vs))
	for i, v := range vs {
		out.Body.Items[i] = envOut(v)
	}
	out.Body.NextCursor = next
	return out, nil
}

type envInput struct {
	ID   string `path:"id"`
	Name string `path:"name" doc:"letters, digits and _, not starting with a digit"`
}

// setEnvInput's value has no schema limits: huma would echo a refused
// value in its error; the store checks it and says only why.
type setEnvInput struct {
	ID   string `path:"id"`
	Name string `path:"name" doc:"letters, digits and _, not starting with a digit"`
	Body struct {
		Value string `json:"value" doc:"at most 64 KiB"`
		// Environments' schema documents the values for clients; the store
		// checks them again, as it does for every caller.
		Environments []deployment.Environment `json:"environments,omitempty" required:"false" enum:"production,preview" minItems:"1" uniqueItems:"true" doc:"production, preview or both; a preview runs any pushed branch, so keep production secrets from it. Absent: both for a new variable, unchanged for an existing one"`
	}
}

type envOutput struct{ Body EnvVariable }

func (a *API) setEnv(ctx context.Context, in *setEnvInput) (*envOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	v, err := a.Variables.Set(ctx, principal(ctx).UserID, id, in.Name, in.Body.Value, in.Body.Environments)
	if err != nil {
		return nil, envProblem(err)
	}
	return &envOutput{Body: envOut(v)}, nil
}

type revealEnvOutput struct {
	Body struct {
		EnvVariable
		Value string `json:"value"`
	}
}

func (a *API) getEnv(ctx context.Context, in *envInput) (*revealEnvOutput, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	v, value, err := a.Variables.Reveal(ctx, principal(ctx).UserID, id, in.Name)
	if err != nil {
		return nil, envProblem(err)
	}
	out := &revealEnvOutput{}
	out.Body.EnvVariable, out.Body.Value = envOut(v), value
	return out, nil
}

func (a *API) deleteEnv(ctx context.Context, in *envInput) (*struct{}, error) {
	id, err := projectID(in.ID)
	if err != nil {
		return nil, err
	}
	if err := a.Variables.Delete(ctx, principal(ctx).UserID, id, in.Name); err != nil {
		return nil, envProblem(err)
	}
	return nil, nil
}
