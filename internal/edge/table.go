package edge

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/google/uuid"
)

// Backend is one healthy instance and the node-proxy that reaches it.
type Backend struct {
	InstanceID uuid.UUID `json:"instance_id"`
	NodeProxy  string    `json:"node_proxy"` // host:port on the private network
}

// Route is what a host resolves to.
type Route struct {
	ProjectID    uuid.UUID `json:"project_id"`
	DeploymentID uuid.UUID `json:"deployment_id"`
	Backends     []Backend `json:"backends"`
}

// Instance is one routable instance, as the database lists them.
type Instance struct {
	ProjectID    uuid.UUID
	ProjectSlug  string
	DeploymentID uuid.UUID
	InstanceID   uuid.UUID
	NodeProxy    string
}

// Domain is a verified custom domain of a project.
type Domain struct {
	Name      string
	ProjectID uuid.UUID
}

// Table is an immutable route table.
type Table struct {
	Routes map[string]Route `json:"routes"`
}

// NewTable builds the table: each project at <slug>.<appsDomain>, each
// deployment at <deployment id>.<appsDomain> (previews), and each verified
// custom domain at its name, all to the instances of the active deployment
// that are healthy. Names that do not normalise are left out.
func NewTable(appsDomain string, instances []Instance, domains []Domain) *Table {
	t := &Table{Routes: map[string]Route{}}
	byProject := map[uuid.UUID]Route{}
	slugs := map[uuid.UUID]string{}
	for _, in := range instances {
		r := byProject[in.ProjectID]
		r.ProjectID, r.DeploymentID = in.ProjectID, in.DeploymentID
		r.Backends = append(r.Backends, Backend{InstanceID: in.InstanceID, NodeProxy: in.NodeProxy})
		byProject[in.ProjectID] = r
		slugs[in.ProjectID] = in.ProjectSlug
	}
	for project, r := range byProject {
		t.add(slugs[project]+"."+appsDomain, r)
		t.add(r.DeploymentID.String()+"."+appsDomain, r)
	}
	for _, d := range domains {
		if r, ok := byProject[d.ProjectID]; ok {
			t.add(d.Name, r)
		}
	}
	return t
}

func (t *Table) add(name string, r Route) {
	if host, err := NormalizeHost(name); err == nil {
		t.Routes[host] = r
	}
}

// Lookup finds the route for a Host header.
func (t *Table) Lookup(hostHeader string) (Route, bool) {
	host, err := NormalizeHost(hostHeader)
	if err != nil {
		return Route{}, false
	}
	r, ok := t.Routes[host]
	return r, ok
}

// Routes holds the current table; readers never see a table half built.
type Routes struct {
	current atomic.Pointer[Table]
}

// Load returns the current table (an empty one before the first Store).
func (r *Routes) Load() *Table {
	if t := r.current.Load(); t != nil {
		return t
	}
	return &Table{Routes: map[string]Route{}}
}

// Store makes t the current table.
func (r *Routes) Store(t *Table) { r.current.Store(t) }

// SaveSnapshot writes t to path atomically (write, then rename), so an edge
// restarted while the database is away serves the last table it had.
func SaveSnapshot(path string, t *Table) error {
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".routes-*")
	if err != nil {
		return fmt.Errorf("route snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("route snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("route snapshot: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// LoadSnapshot reads a table SaveSnapshot wrote.
func LoadSnapshot(path string) (*Table, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("route snapshot: %w", err)
	}
	var t Table
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("route snapshot %s is corrupt: %w", path, err)
	}
	if t.Routes == nil {
		t.Routes = map[string]Route{}
	}
	return &t, nil
}
