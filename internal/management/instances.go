package management

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
)

// Cluster is what the instance and node routes need of the operator's
// domain (kept as functions so this transport package does not import it).
type Cluster struct {
	AddInstance   func(r *http.Request, deploymentID uuid.UUID, node *uuid.UUID) (db.Instance, error)
	SetNodeStatus func(r *http.Request, nodeID uuid.UUID, status string) (db.Node, error)
	// ErrCannotPlace marks placement refusals (409).
	ErrCannotPlace error
}

// Instance is an instance as the management API shows it.
type Instance struct {
	ID           uuid.UUID  `json:"id"`
	DeploymentID uuid.UUID  `json:"deployment_id"`
	NodeID       uuid.UUID  `json:"node_id"`
	DesiredState string     `json:"desired_state"`
	State        string     `json:"state"`
	StateReason  *string    `json:"state_reason"`
	Address      string     `json:"address"`
	Port         int32      `json:"port"`
	RestartCount int32      `json:"restart_count"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
}

func instanceJSON(in db.Instance) Instance {
	return Instance{ID: in.ID, DeploymentID: in.DeploymentID, NodeID: in.NodeID, DesiredState: in.DesiredState, State: in.State,
		StateReason: in.StateReason, Address: in.Ipv6Address.String(), Port: in.Port, RestartCount: in.RestartCount,
		CreatedAt: in.CreatedAt, StartedAt: in.StartedAt}
}

// Node is a node as the management API shows it.
type Node struct {
	ID              uuid.UUID `json:"id"`
	Hostname        string    `json:"hostname"`
	InternalAddress string    `json:"internal_address"`
	Region          string    `json:"region"`
	Status          string    `json:"status"`
	CPUMillis       int32     `json:"cpu_millis"`
	FreeCPUMillis   int32     `json:"free_cpu_millis"`
	MemoryMB        int32     `json:"memory_mb"`
	FreeMemoryMB    int32     `json:"free_memory_mb"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
}

func nodeJSON(n db.Node) Node {
	return Node{ID: n.ID, Hostname: n.Hostname, InternalAddress: n.InternalAddress, Region: n.Region, Status: n.Status,
		CPUMillis: n.CpuMillis, FreeCPUMillis: n.FreeCpuMillis, MemoryMB: n.MemoryMb, FreeMemoryMB: n.FreeMemoryMb, LastHeartbeatAt: n.LastHeartbeatAt}
}

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

func (a *API) clusterError(err error) error {
	switch {
	case errors.Is(err, nodeagent.ErrNotFound):
		return httpapi.NotFound("%s", err)
	case errors.Is(err, nodeagent.ErrInvalid):
		return httpapi.Invalid("%s", err)
	case errors.Is(err, nodeagent.ErrNoCapacity), a.Cluster.ErrCannotPlace != nil && errors.Is(err, a.Cluster.ErrCannotPlace):
		return httpapi.Conflict("%s", err)
	}
	return err
}

func (a *API) listInstances(w http.ResponseWriter, r *http.Request) error {
	dep, err := optionalID(r, "deployment_id")
	if err != nil {
		return err
	}
	node, err := optionalID(r, "node_id")
	if err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return httpapi.BadRequest("limit must be a number from 1 to 1000")
		}
	}
	rows, err := db.New(a.Pool).InstanceList(r.Context(), db.InstanceListParams{DeploymentID: dep, NodeID: node, MaxRows: int32(limit)})
	if err != nil {
		return err
	}
	out := make([]Instance, len(rows))
	for i, in := range rows {
		out[i] = instanceJSON(in)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"instances": out})
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
	in, err := a.Cluster.AddInstance(r, req.DeploymentID, req.NodeID)
	if err != nil {
		return a.clusterError(err)
	}
	w.Header().Set("Location", "/v1/instances/"+in.ID.String())
	httpapi.WriteJSON(w, http.StatusCreated, instanceJSON(in))
	return nil
}

func (a *API) instance(r *http.Request) (db.Instance, error) {
	iid, err := pathID(r)
	if err != nil {
		return db.Instance{}, err
	}
	in, err := db.New(a.Pool).InstanceGetByID(r.Context(), iid)
	if err != nil {
		return db.Instance{}, httpapi.NotFound("instance %s not found", iid)
	}
	return in, nil
}

func (a *API) getInstance(w http.ResponseWriter, r *http.Request) error {
	in, err := a.instance(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, instanceJSON(in))
	return nil
}

func (a *API) setInstanceState(w http.ResponseWriter, r *http.Request) error {
	in, err := a.instance(r)
	if err != nil {
		return err
	}
	var req struct {
		State string `json:"state"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	out, err := nodeagent.SetDesiredState(r.Context(), a.Pool, in.NodeID, in.ID, req.State)
	if err != nil {
		return a.clusterError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, instanceJSON(out))
	return nil
}

func (a *API) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	in, err := a.instance(r)
	if err != nil {
		return err
	}
	deleted, err := nodeagent.DeleteInstance(r.Context(), a.Pool, in.NodeID, in.ID)
	if err != nil {
		return a.clusterError(err)
	}
	if deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"status": "stopping", "detail": "the instance is being stopped; DELETE again once it has stopped to remove it"})
	return nil
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) error {
	rows, err := db.New(a.Pool).NodeList(r.Context())
	if err != nil {
		return err
	}
	out := make([]Node, len(rows))
	for i, n := range rows {
		out[i] = nodeJSON(n)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"nodes": out})
	return nil
}

func (a *API) setNodeStatus(status string) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		nid, err := pathID(r)
		if err != nil {
			return err
		}
		n, err := a.Cluster.SetNodeStatus(r, nid, status)
		if err != nil {
			return a.clusterError(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, nodeJSON(n))
		return nil
	}
}
