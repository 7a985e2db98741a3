package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/hostname"
)

// Backend is one healthy instance and the node-proxy that reaches it.
type Backend struct {
	InstanceID uuid.UUID `json:"instance_id"`
	NodeProxy  string    `json:"node_proxy"` // host:port on the private network

	// health is shared by every table that lists this instance, so load and
	// failures seen under one table carry over to the next (Routes.Store).
	health *health
}

// Route is what a host resolves to.
type Route struct {
	ProjectID    uuid.UUID `json:"project_id"`
	DeploymentID uuid.UUID `json:"deployment_id"`
	Backends     []Backend `json:"backends"`
	// Custom: the name is a verified custom domain, not one of the
	// platform's (slug or deployment host). See Table.Update.
	Custom bool `json:"custom,omitempty"`
}

// Project is a project with an active deployment.
type Project struct {
	ID                 uuid.UUID
	Slug               string
	ActiveDeploymentID uuid.UUID
}

// Instance is one routable (healthy, meant to run) instance.
type Instance struct {
	ProjectID    uuid.UUID
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

	// hosts indexes Routes by project, so one project's names can be
	// replaced without rebuilding the rest (Table.Update).
	hosts map[uuid.UUID][]string
	// conflicts counts names an Update left with another project (see
	// Update); the syncer then rebuilds the whole table.
	conflicts int
}

// NewTable builds the table. A project answers at <slug>.<appsDomain> and
// at each of its verified custom domains, from its active deployment, even
// while none of its instances is healthy (the edge says 503, not 404).
// Every deployment with healthy instances answers at
// <deployment id>.<appsDomain>, active or not: previews, and a retiring
// deployment still reachable until it stops. Names that do not normalise
// are left out.
//
// A name is never taken from the project that has it: the first claim
// wins, and the platform's names (deployment hosts, then slugs) are added
// before custom domains. The database already keeps the kinds apart (no
// UUID-shaped slugs, no custom domains under the platform's domains); this
// is the edge not trusting that alone, since a wrong route serves one
// tenant's traffic to another.
func NewTable(appsDomain string, projects []Project, instances []Instance, domains []Domain) *Table {
	t := &Table{Routes: make(map[string]Route, 2*len(projects)+len(domains)), hosts: make(map[uuid.UUID][]string, len(projects))}
	byDeployment := map[uuid.UUID]Route{}
	for _, in := range instances {
		r := byDeployment[in.DeploymentID]
		r.ProjectID, r.DeploymentID = in.ProjectID, in.DeploymentID
		r.Backends = append(r.Backends, Backend{InstanceID: in.InstanceID, NodeProxy: in.NodeProxy})
		byDeployment[in.DeploymentID] = r
	}
	for dep, r := range byDeployment {
		t.add(dep.String()+"."+appsDomain, r)
	}
	active := make(map[uuid.UUID]Route, len(projects))
	for _, p := range projects {
		r := byDeployment[p.ActiveDeploymentID]
		r.ProjectID, r.DeploymentID = p.ID, p.ActiveDeploymentID
		active[p.ID] = r
		t.add(p.ActiveDeploymentID.String()+"."+appsDomain, r)
	}
	for _, p := range projects {
		t.add(p.Slug+"."+appsDomain, active[p.ID])
	}
	for _, d := range domains {
		if r, ok := active[d.ProjectID]; ok {
			r.Custom = true
			t.add(d.Name, r)
		}
	}
	return t
}

// add routes name to r unless another project has it already.
func (t *Table) add(name string, r Route) {
	host := name
	if !hostname.IsPlain(name) {
		var err error
		if host, err = hostname.Normalize(name); err != nil {
			return
		}
	}
	if had, ok := t.Routes[host]; ok {
		if had.ProjectID != r.ProjectID {
			t.conflicts++
			return
		}
		t.Routes[host] = r // the project's own name, a better route
		return
	}
	t.Routes[host] = r
	t.hosts[r.ProjectID] = append(t.hosts[r.ProjectID], host)
}

// index rebuilds the per-project index (for a table read from a snapshot).
func (t *Table) index() {
	t.hosts = make(map[uuid.UUID][]string, len(t.Routes)/2)
	for host, r := range t.Routes {
		t.hosts[r.ProjectID] = append(t.hosts[r.ProjectID], host)
	}
}

// Update returns a new table in which the given projects' names are those
// of fresh, a table built from just those projects' rows; every other name
// is as in t. A project in projects but not in fresh has no names left.
// It copies the maps (milliseconds at 100,000 projects) instead of
// rebuilding from the whole database (seconds).
//
// A name of fresh that another project still has in t is not taken from
// it, with one exception: a custom domain held as a custom domain moves
// (A lost it to B, and B's change arrived first). fresh was read from the
// database after the move, whose unique index on verified names allows
// one owner only. Any other clash (a slug against a custom domain, a slug
// moved between projects before the old holder's change arrived) leaves
// the name with its holder and counts in Conflicts; a full rebuild from
// the database then decides, platform names first (NewTable).
func (t *Table) Update(projects []uuid.UUID, fresh *Table) *Table {
	next := &Table{Routes: maps.Clone(t.Routes), hosts: maps.Clone(t.hosts)}
	if next.Routes == nil {
		next.Routes = map[string]Route{}
	}
	if next.hosts == nil {
		next.index()
	}
	for _, p := range projects {
		for _, host := range next.hosts[p] {
			// A name may have moved to another project since: leave it.
			if r, ok := next.Routes[host]; ok && r.ProjectID == p {
				delete(next.Routes, host)
			}
		}
		delete(next.hosts, p)
	}
	for p, hosts := range fresh.hosts {
		kept := hosts[:0:0]
		for _, host := range hosts {
			if had, ok := next.Routes[host]; ok && had.ProjectID != p {
				if !had.Custom || !fresh.Routes[host].Custom {
					next.conflicts++
					continue
				}
				// Moved: the old holder's index entry goes stale, and its
				// next update skips the name (it checks the holder).
			}
			next.Routes[host] = fresh.Routes[host]
			kept = append(kept, host)
		}
		if len(kept) == len(hosts) {
			kept = hosts // the common case: no copy
		}
		next.hosts[p] = kept
	}
	return next
}

// Conflicts is how many names the Update that made t (or NewTable) did not
// route because another project has them.
func (t *Table) Conflicts() int { return t.conflicts }

// Lookup finds the route for a Host header.
func (t *Table) Lookup(hostHeader string) (Route, bool) {
	// Fast path: keys are normal forms, so a header equal to a key (with or
	// without a port) is that name, and normalising it would change
	// nothing. Most clients send exactly that.
	if r, ok := t.Routes[hostHeader]; ok {
		return r, true
	}
	if i := strings.LastIndexByte(hostHeader, ':'); i > 0 && isPort(hostHeader[i+1:]) {
		if r, ok := t.Routes[hostHeader[:i]]; ok {
			return r, true
		}
	}
	host, err := hostname.Normalize(hostHeader)
	if err != nil {
		return Route{}, false
	}
	r, ok := t.Routes[host]
	return r, ok
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Hosts is how many names the table routes.
func (t *Table) Hosts() int { return len(t.Routes) }

// Routes holds the current table; readers never see a table half built.
type Routes struct {
	current atomic.Pointer[Table]

	mu     sync.Mutex // serialises Store
	health map[uuid.UUID]*health
}

// Load returns the current table (an empty one before the first Store).
func (r *Routes) Load() *Table {
	if t := r.current.Load(); t != nil {
		return t
	}
	return &Table{Routes: map[string]Route{}, hosts: map[uuid.UUID][]string{}}
}

// Store makes t the current table. It gives t's backends the health state
// earlier tables had for the same instances, and forgets instances that
// left; t must not be in use by readers yet.
func (r *Routes) Store(t *Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[uuid.UUID]*health, len(r.health))
	for _, route := range t.Routes {
		for i := range route.Backends {
			b := &route.Backends[i]
			h := next[b.InstanceID]
			if h == nil {
				h = r.health[b.InstanceID]
			}
			if h == nil {
				h = &health{}
			}
			next[b.InstanceID] = h
			b.health = h
		}
	}
	r.health = next
	r.current.Store(t)
}

// StoreUpdate makes t, an Update of the current table by fresh, current.
// Only fresh's backends need health state: the others kept theirs. Health
// of instances that left is dropped at the next full Store.
func (r *Routes) StoreUpdate(t, fresh *Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.health == nil {
		r.health = map[uuid.UUID]*health{}
	}
	for _, route := range fresh.Routes {
		for i := range route.Backends {
			b := &route.Backends[i]
			h := r.health[b.InstanceID]
			if h == nil {
				h = &health{}
				r.health[b.InstanceID] = h
			}
			b.health = h
		}
	}
	r.current.Store(t)
}

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
	t.index()
	return &t, nil
}

// lookupBytes is Lookup for a Host header still in the fast path's
// buffer: the common spellings are found without making a string of it.
func (t *Table) lookupBytes(h []byte) (Route, bool) {
	if r, ok := t.Routes[string(h)]; ok {
		return r, true
	}
	if i := bytes.LastIndexByte(h, ':'); i > 0 && len(h)-i-1 >= 1 && len(h)-i-1 <= 5 {
		port := true
		for _, c := range h[i+1:] {
			port = port && c >= '0' && c <= '9'
		}
		if port {
			if r, ok := t.Routes[string(h[:i])]; ok {
				return r, true
			}
		}
	}
	return t.Lookup(string(h))
}
