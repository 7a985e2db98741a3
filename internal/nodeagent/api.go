package nodeagent

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// APIHandler is the node API (/v1, cluster token required). Writes go to
// the database, the source of truth, and wake the convergence loop; reads
// of an instance also say what containerd actually runs.
func (a *Agent) APIHandler() http.Handler {
	s := httpapi.Server{Log: a.Log}
	mux := http.NewServeMux()
	route := func(pattern string, h httpapi.HandlerFunc) {
		mux.Handle(pattern, s.RequireToken(a.Token, s.Handle(h)))
	}
	route("GET /v1/health", a.health)
	route("GET /v1/node/info", a.info)
	route("GET /v1/node/resources", a.resources)
	route("POST /v1/instances", a.createInstance)
	route("GET /v1/instances/{id}", a.getInstance)
	route("PUT /v1/instances/{id}/state", a.setState)
	route("DELETE /v1/instances/{id}", a.deleteInstance)
	route("GET /v1/instances/{id}/logs", a.instanceLogs)
	return s.Router(mux)
}

func (a *Agent) health(w http.ResponseWriter, r *http.Request) error {
	out := map[string]string{"status": "ok", "node_id": a.Node.ID.String()}
	status := http.StatusOK
	if _, err := a.Observer.List(r.Context()); err != nil {
		out["status"], out["containerd"] = "degraded", err.Error()
		status = http.StatusServiceUnavailable
	}
	if err := a.Pool.Ping(r.Context()); err != nil {
		out["status"], out["database"] = "degraded", "unreachable"
		status = http.StatusServiceUnavailable
	}
	httpapi.WriteJSON(w, status, out)
	return nil
}

// NodeInfo is GET /v1/node/info.
type NodeInfo struct {
	ID              uuid.UUID `json:"id"`
	Hostname        string    `json:"hostname"`
	InternalAddress string    `json:"internal_address"`
	Region          string    `json:"region"`
	IPv6Prefix      string    `json:"ipv6_prefix"`
	Status          string    `json:"status"`
	RuntimeHandler  string    `json:"runtime_handler"`
	AgentVersion    string    `json:"agent_version"`
}

func (a *Agent) info(w http.ResponseWriter, r *http.Request) error {
	n, err := db.New(a.Pool).NodeGetByID(r.Context(), a.Node.ID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, NodeInfo{
		ID: n.ID, Hostname: n.Hostname, InternalAddress: n.InternalAddress, Region: n.Region,
		IPv6Prefix: n.Ipv6Prefix.String(), Status: n.Status, RuntimeHandler: a.Handler, AgentVersion: a.Version,
	})
	return nil
}

// Resources is GET /v1/node/resources.
type Resources struct {
	CPUMillis     int32 `json:"cpu_millis"`
	MemoryMB      int32 `json:"memory_mb"`
	FreeCPUMillis int32 `json:"free_cpu_millis"`
	FreeMemoryMB  int32 `json:"free_memory_mb"`
	Running       int   `json:"instances_running"` // as containerd reports
	Exited        int   `json:"instances_exited"`
}

func (a *Agent) resources(w http.ResponseWriter, r *http.Request) error {
	n, err := db.New(a.Pool).NodeGetByID(r.Context(), a.Node.ID)
	if err != nil {
		return err
	}
	list, err := a.Observer.List(r.Context())
	if err != nil {
		return httpapi.Unavailable("containerd: %v", err)
	}
	res := Resources{CPUMillis: n.CpuMillis, MemoryMB: n.MemoryMb, FreeCPUMillis: n.FreeCpuMillis, FreeMemoryMB: n.FreeMemoryMb}
	for _, s := range list {
		switch s.State {
		case runtime.StateRunning:
			res.Running++
		case runtime.StateExited:
			res.Exited++
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

// Instance is an instance as the node API shows it: what the database
// wants and what containerd runs.
type Instance struct {
	ID           uuid.UUID  `json:"id"`
	DeploymentID uuid.UUID  `json:"deployment_id"`
	DesiredState string     `json:"desired_state"`
	State        string     `json:"state"`
	StateReason  *string    `json:"state_reason"`
	Address      string     `json:"address"`
	Port         int32      `json:"port"`
	CPUMillis    int32      `json:"cpu_millis"`
	MemoryMB     int32      `json:"memory_mb"`
	RestartCount int32      `json:"restart_count"`
	Runtime      *Observed  `json:"runtime,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
}

// Observed is containerd's view of an instance.
type Observed struct {
	State     string    `json:"state"`
	PID       uint32    `json:"pid,omitempty"`
	ExitCode  uint32    `json:"exit_code,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

func instanceJSON(in db.Instance, obs *runtime.Status) Instance {
	out := Instance{
		ID: in.ID, DeploymentID: in.DeploymentID, DesiredState: in.DesiredState, State: in.State, StateReason: in.StateReason,
		Address: in.Ipv6Address.String(), Port: in.Port, CPUMillis: in.CpuMillis, MemoryMB: in.MemoryMb,
		RestartCount: in.RestartCount, CreatedAt: in.CreatedAt, StartedAt: in.StartedAt,
	}
	if obs != nil {
		out.Runtime = &Observed{State: string(obs.State), PID: obs.PID, ExitCode: obs.ExitCode, OOMKilled: obs.OOMKilled, StartedAt: obs.StartedAt}
	}
	return out
}

func (a *Agent) instanceID(r *http.Request) (uuid.UUID, error) {
	u, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return uuid.Nil, httpapi.BadRequest("%q is not an instance id", r.PathValue("id"))
	}
	return u, nil
}

func domainError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("%s", err)
	case errors.Is(err, ErrInvalid):
		return httpapi.Invalid("%s", err)
	case errors.Is(err, ErrNoCapacity):
		return httpapi.Conflict("%s", err)
	}
	return err
}

type createRequest struct {
	DeploymentID uuid.UUID `json:"deployment_id"`
	Port         int32     `json:"port"`
	CPUMillis    int32     `json:"cpu_millis"`
	MemoryMB     int32     `json:"memory_mb"`
}

func (a *Agent) createInstance(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.DeploymentID == uuid.Nil {
		return httpapi.BadRequest("deployment_id is required")
	}
	in, err := CreateInstance(r.Context(), a.Pool, a.Node, NewInstance(req))
	if err != nil {
		return domainError(err)
	}
	a.Wake()
	w.Header().Set("Location", "/v1/instances/"+in.ID.String())
	httpapi.WriteJSON(w, http.StatusCreated, instanceJSON(in, nil))
	return nil
}

func (a *Agent) getInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	in, err := db.New(a.Pool).InstanceGetByID(r.Context(), iid)
	if err != nil || in.NodeID != a.Node.ID {
		return httpapi.NotFound("instance %s is not on this node", iid)
	}
	obs, err := a.Observer.Status(r.Context(), iid)
	if err != nil {
		return httpapi.Unavailable("containerd: %v", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, instanceJSON(in, &obs))
	return nil
}

func (a *Agent) setState(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	var req struct {
		State string `json:"state"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	in, err := SetDesiredState(r.Context(), a.Pool, a.Node.ID, iid, req.State)
	if err != nil {
		return domainError(err)
	}
	a.Wake()
	httpapi.WriteJSON(w, http.StatusOK, instanceJSON(in, nil))
	return nil
}

func (a *Agent) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	deleted, err := DeleteInstance(r.Context(), a.Pool, a.Node.ID, iid)
	if err != nil {
		return domainError(err)
	}
	if deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	a.Wake()
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"status": "stopping", "detail": "the instance is being stopped; DELETE again once it has stopped to remove it"})
	return nil
}

// instanceLogs streams an instance's stdout and stderr as captured on this
// node (bounded and rotated by the runtime); ?follow=true keeps the
// response open for new lines until the client goes away.
func (a *Agent) instanceLogs(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow") == "true"
	in, err := db.New(a.Pool).InstanceGetByID(r.Context(), iid)
	if err != nil || in.NodeID != a.Node.ID {
		return httpapi.NotFound("instance %s is not on this node", iid)
	}
	rc, err := a.Observer.Logs(r.Context(), iid, follow)
	if errors.Is(err, runtime.ErrNotFound) {
		return httpapi.NotFound("instance %s has no logs on this node", iid)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	flusher := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // the client went away
			}
			_ = flusher.Flush()
		}
		if err != nil {
			return nil // EOF, or the follow ended with the request
		}
	}
}
