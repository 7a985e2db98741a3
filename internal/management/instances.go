package management

import (
	"context"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
)

// Cluster is what the instance and node routes need of the operator: the
// writes that choose nodes. Errors wrapping instance.ErrCannotPlace or
// instance.ErrNoCapacity are conflicts (409); the domains' ErrNotFound and
// ErrInvalid are 404 and 422.
type Cluster interface {
	// AddInstance places one more instance of a deployment, on nodeID when
	// given, else wherever the scheduler puts it.
	AddInstance(ctx context.Context, deploymentID uuid.UUID, nodeID *uuid.UUID) (instance.Instance, error)
	// SetNodeStatus drains or undrains a node.
	SetNodeStatus(ctx context.Context, id uuid.UUID, status node.Status) (node.Node, error)
}

// refusals maps the cluster's domain errors for every instance and node route.
var refusals = httpapi.Refusals{
	NotFound: []error{instance.ErrNotFound, deployment.ErrNotFound, node.ErrNotFound},
	Invalid:  []error{instance.ErrInvalid, node.ErrInvalid},
	Conflict: []error{instance.ErrNoCapacity, instance.ErrCannotPlace},
}

func (a *API) instances() instance.Store { return instance.Store{DB: a.Pool} }

func optionalID(r *http.Request, name string) (*uuid.UUID, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil, nil
	}
	u, err := uuid.Parse(v)
	if err != nil {
		return nil, httpapi.BadRequest("%s is not an id", name)
	}
	return &u, nil
}

func (a *API) listInstances(w http.ResponseWriter, r *http.Request) error {
	f := instance.Filter{Limit: 100}
	var err error
	if f.DeploymentID, err = optionalID(r, "deployment_id"); err != nil {
		return err
	}
	if f.NodeID, err = optionalID(r, "node_id"); err != nil {
		return err
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return httpapi.BadRequest("limit must be a number from 1 to 1000")
		}
	}
	list, err := a.instances().List(r.Context(), f)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"instances": list})
	return nil
}

func (a *API) createInstance(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeploymentID uuid.UUID  `json:"deployment_id"`
		NodeID       *uuid.UUID `json:"node_id"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.DeploymentID == uuid.Nil {
		return httpapi.BadRequest("deployment_id is required")
	}
	in, err := a.Cluster.AddInstance(r.Context(), req.DeploymentID, req.NodeID)
	if err != nil {
		return refusals.Map(err)
	}
	w.Header().Set("Location", "/v1/instances/"+in.ID.String())
	httpapi.WriteJSON(w, http.StatusCreated, in)
	return nil
}

func (a *API) getInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := pathID(r)
	if err != nil {
		return err
	}
	in, err := a.instances().Get(r.Context(), iid)
	if err != nil {
		return refusals.Map(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, in)
	return nil
}

func (a *API) setInstanceState(w http.ResponseWriter, r *http.Request) error {
	iid, err := pathID(r)
	if err != nil {
		return err
	}
	var req struct {
		State instance.Desired `json:"state"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	in, err := a.instances().SetDesired(r.Context(), iid, req.State)
	if err != nil {
		return refusals.Map(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, in)
	return nil
}

func (a *API) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := pathID(r)
	if err != nil {
		return err
	}
	deleted, err := a.instances().Delete(r.Context(), iid)
	if err != nil {
		return refusals.Map(err)
	}
	if deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"status": string(instance.StateStopping), "detail": "the instance is being stopped; DELETE again once it has stopped to remove it"})
	return nil
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) error {
	list, err := node.Store{DB: a.Pool}.List(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"nodes": list})
	return nil
}

func (a *API) setNodeStatus(status node.Status) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		nid, err := pathID(r)
		if err != nil {
			return err
		}
		n, err := a.Cluster.SetNodeStatus(r.Context(), nid, status)
		if err != nil {
			return refusals.Map(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, n)
		return nil
	}
}
