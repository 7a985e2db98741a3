package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/deployment"
)

// cancelReason is the failure reason of a deployment cancelled through
// the API.
const cancelReason = "cancelled"

func (a *API) registerDeploymentStatus(api huma.API) {
	// The 202 of a rollback is documented with the 200's body, so that a
	// generated client parses both.
	deploymentSchema := api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[Deployment](), true, "")
	huma.Register(api, huma.Operation{
		Responses: map[string]*huma.Response{
			"202": {Description: "Rolling back: an operator switches traffic to the deployment", Content: map[string]*huma.MediaType{
				"application/json": {Schema: deploymentSchema},
			}},
		},
		OperationID: "set-deployment-status", Method: http.MethodPut, Path: "/v1/deployments/{id}/status", Tags: []string{"deployments"}, Security: signedIn,
		Summary: "Roll back to or cancel a deployment",
		Description: "`active` rolls the project back to this earlier deployment (retiring or stopped): the operator switches traffic to it, " +
			"re-deploying it first when stopped; answers 202. A preview is never rolled back to (409): deploy its commit instead. `cancelled` stops a queued or building deployment: its build is cancelled " +
			"and it fails with the reason `cancelled`; answers 200. A deployment in another status answers 409.",
	}, a.setDeploymentStatus)
}

type setDeploymentStatusInput struct {
	ID   string `path:"id"`
	Body struct {
		Status string `json:"status" enum:"active,cancelled" doc:"active: roll back to it; cancelled: stop its build"`
	}
}

type setDeploymentStatusOutput struct {
	Status int
	Body   Deployment
}

func (a *API) setDeploymentStatus(ctx context.Context, in *setDeploymentStatusInput) (*setDeploymentStatusOutput, error) {
	v, err := a.visibleDeployment(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	switch in.Body.Status {
	case string(deployment.StatusActive):
		return a.rollBack(ctx, v)
	case cancelReason:
		return a.cancelDeployment(ctx, v)
	default: // the schema's enum refuses it first; kept for safety
		return nil, huma.Error422UnprocessableEntity("status must be active or cancelled")
	}
}

// rollBack asks the operator to make v active again. The task commits
// with nothing else: the operator reads the deployment when it runs, and
// refuses then if it moved on meanwhile.
func (a *API) rollBack(ctx context.Context, v deployment.Visible) (*setDeploymentStatusOutput, error) {
	if v.Status == deployment.StatusActive && v.Environment == deployment.EnvironmentProduction {
		return &setDeploymentStatusOutput{Status: http.StatusOK, Body: a.deploymentOut(v)}, nil
	}
	if err := v.CheckRollback(); err != nil {
		return nil, huma.Error409Conflict(err.Error())
	}
	err := pgx.BeginFunc(ctx, a.Deploys.DB, func(tx pgx.Tx) error {
		_, err := a.Deploys.Queue.EnqueueTx(ctx, tx, deployment.RollbackTask{DeploymentID: v.ID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("roll back to %s: %w", v.ID, err)
	}
	return &setDeploymentStatusOutput{Status: http.StatusAccepted, Body: a.deploymentOut(v)}, nil
}

func (a *API) cancelDeployment(ctx context.Context, v deployment.Visible) (*setDeploymentStatusOutput, error) {
	err := build.NewStore(a.Deploys.DB).CancelDeployment(ctx, v.ID, cancelReason)
	if errors.Is(err, build.ErrDeploymentMoved) {
		return nil, huma.Error409Conflict("the deployment is past its build; only queued or building deployments can be cancelled")
	}
	if err != nil {
		return nil, err
	}
	v, err = a.deployments().GetForMember(ctx, principal(ctx).UserID, v.ID)
	if err != nil {
		return nil, deploymentProblem(err)
	}
	return &setDeploymentStatusOutput{Status: http.StatusOK, Body: a.deploymentOut(v)}, nil
}
