package nodeagent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// APIHandler is the node API (/v1, CLUSTER_TOKEN required). Writes go to
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
	// Causes are logged, not shown: the body says what is down, not why.
	out := map[string]string{"status": "ok", "node_id": a.Node.ID.String()}
	status := http.StatusOK
	if _, err := a.Observer.List(r.Context()); err != nil {
		a.Log.WarnContext(r.Context(), "health: container runtime", "err", err)
		out["status"], out["containerd"] = "degraded", "unavailable"
		status = http.StatusServiceUnavailable
	}
	if err := a.Pool.Ping(r.Context()); err != nil {
		a.Log.WarnContext(r.Context(), "health: database", "err", err)
		out["status"], out["database"] = "degraded", "unreachable"
		status = http.StatusServiceUnavailable
	}
	httpapi.WriteJSON(w, status, out)
	return nil
}

// NodeInfo is GET /v1/node/info: the node as every API shows it, and the
// runtime handler its instances run with.
type NodeInfo struct {
	node.Node
	RuntimeHandler string `json:"runtime_handler"`
}

func (a *Agent) info(w http.ResponseWriter, r *http.Request) error {
	n, err := node.Store{DB: a.Pool}.Get(r.Context(), a.Node.ID)
	if err != nil {
		return err // this node's own row: missing is a server fault
	}
	n.AgentVersion = a.Version // the binary answering, whatever registered the row
	httpapi.WriteJSON(w, http.StatusOK, NodeInfo{Node: n, RuntimeHandler: a.Handler})
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

// runtimeDown is a container runtime that cannot be asked; the cause is
// logged, not shown.
func runtimeDown(err error) error {
	return httpapi.Unavailable("the container runtime is unavailable").With(err)
}

func (a *Agent) resources(w http.ResponseWriter, r *http.Request) error {
	n, err := node.Store{DB: a.Pool}.Get(r.Context(), a.Node.ID)
	if err != nil {
		return err
	}
	list, err := a.Observer.List(r.Context())
	if err != nil {
		return runtimeDown(err)
	}
	res := Resources{CPUMillis: n.CPUMillis, MemoryMB: n.MemoryMB, FreeCPUMillis: n.FreeCPUMillis, FreeMemoryMB: n.FreeMemoryMB}
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

// Instance is an instance as the node API shows it: as every API shows it,
// and with what containerd runs when asked for one instance.
type Instance struct {
	instance.Instance
	Runtime *Observed `json:"runtime,omitempty"`
}

// Observed is containerd's view of an instance.
type Observed struct {
	State     string    `json:"state"`
	PID       uint32    `json:"pid,omitempty"`
	ExitCode  uint32    `json:"exit_code,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

func observed(s runtime.Status) *Observed {
	return &Observed{State: string(s.State), PID: s.PID, ExitCode: s.ExitCode, OOMKilled: s.OOMKilled, StartedAt: s.StartedAt}
}

// instances is this node's view of the instances table.
func (a *Agent) instances() instance.Store { return instance.Store{DB: a.Pool, Node: a.Node.ID} }

func (a *Agent) instanceID(r *http.Request) (uuid.UUID, error) {
	u, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return uuid.Nil, httpapi.BadRequest("%q is not an instance id", r.PathValue("id"))
	}
	return u, nil
}

// refusals maps the instance store's errors.
var refusals = httpapi.Refusals{
	NotFound: []error{instance.ErrNotFound},
	Invalid:  []error{instance.ErrInvalid},
	Conflict: []error{instance.ErrNoCapacity},
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
	in, err := a.instances().Create(r.Context(), a.Node, instance.New(req))
	if err != nil {
		return refusals.Map(err)
	}
	a.Wake()
	w.Header().Set("Location", "/v1/instances/"+in.ID.String())
	httpapi.WriteJSON(w, http.StatusCreated, Instance{Instance: in})
	return nil
}

func (a *Agent) getInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	in, err := a.instances().Get(r.Context(), iid)
	if err != nil {
		return refusals.Map(err)
	}
	obs, err := a.Observer.Status(r.Context(), iid)
	if err != nil {
		return runtimeDown(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, Instance{Instance: in, Runtime: observed(obs)})
	return nil
}

func (a *Agent) setState(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
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
	a.Wake()
	httpapi.WriteJSON(w, http.StatusOK, Instance{Instance: in})
	return nil
}

func (a *Agent) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
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
	a.Wake()
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"status": string(instance.StateStopping), "detail": "the instance is being stopped; DELETE again once it has stopped to remove it"})
	return nil
}

// instanceLogs streams an instance's stdout and stderr as captured on this
// node (bounded and rotated by the runtime); ?follow=true keeps the
// response open for new lines until the client goes away.
//
// ?offset=N starts N bytes into what the node holds, so that a reader who
// was cut off resumes where it stopped; X-Log-Offset answers where the
// response really starts. Offsets count from the oldest byte the node
// keeps, so they hold until the runtime rotates the log: a rotation moves
// them by the size of the generation it drops. When the node holds fewer
// than N bytes the log was rotated or lost meanwhile, and the response
// starts at 0 to say so.
func (a *Agent) instanceLogs(w http.ResponseWriter, r *http.Request) error {
	iid, err := a.instanceID(r)
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow") == "true"
	var offset int64
	if raw := r.URL.Query().Get("offset"); raw != "" {
		if offset, err = strconv.ParseInt(raw, 10, 64); err != nil || offset < 0 {
			return httpapi.BadRequest("offset %q is not a byte count", raw)
		}
	}
	if _, err := a.instances().Get(r.Context(), iid); err != nil {
		return refusals.Map(err)
	}
	if offset > 0 && follow {
		// A follower would wait at the end for bytes that are not the
		// ones asked for: check first that the node holds them.
		held, err := a.logHolds(r.Context(), iid, offset)
		if err != nil {
			return err
		}
		if !held {
			offset = 0
		}
	}
	rc, err := a.logReader(r.Context(), iid, follow)
	if err != nil {
		return err
	}
	defer func() { rc.Close() }()
	// The reader cannot seek; what it holds is bounded by the rotation.
	if _, err := io.CopyN(io.Discard, rc, offset); errors.Is(err, io.EOF) {
		rc.Close()
		if rc, err = a.logReader(r.Context(), iid, follow); err != nil {
			return err
		}
		offset = 0
	} else if err != nil {
		return runtimeDown(err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Log-Offset", strconv.FormatInt(offset, 10))
	flusher := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	_ = flusher.Flush() // the reader learns the offset before the first line
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

func (a *Agent) logReader(ctx context.Context, iid uuid.UUID, follow bool) (io.ReadCloser, error) {
	rc, err := a.Observer.Logs(ctx, iid, follow)
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, httpapi.NotFound("instance %s has no logs on this node", iid)
	}
	if err != nil {
		return nil, runtimeDown(err)
	}
	return rc, nil
}

// logHolds says whether the node holds at least n bytes of the
// instance's log.
func (a *Agent) logHolds(ctx context.Context, iid uuid.UUID, n int64) (bool, error) {
	rc, err := a.logReader(ctx, iid, false)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	got, err := io.CopyN(io.Discard, rc, n)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, runtimeDown(err)
	}
	return got == n, nil
}
