package edge

import (
	"hash/maphash"
	"iter"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

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

// Table is an immutable route table, laid out for size: 100,000 projects
// (200,000 names, 300,000 instances) in about 25 MiB, in a handful of
// large allocations the garbage collector need not look inside. Names live
// in one byte arena, indexed by an open-addressing hash table of their
// records; a deployment's route and its instance set are stored once,
// shared by every name that routes to it (its preview host, the project's
// slug, its custom domains); node addresses are interned.
type Table struct {
	appsDomain string
	slots      []uint32  // 0: empty, else an index into recs plus one
	recs       []nameRec // in insertion order
	arena      []byte    // the names' bytes
	routes     []route
	backends   []Backend // route i's are backends[first : first+n]
	// conflicts counts names an Update (or NewTable) left with another
	// project; the syncer then rebuilds the whole table.
	conflicts int
}

// nameRec is one routed name.
type nameRec struct {
	hash  uint32 // the upper half of the name's hash
	off   uint32 // the name is arena[off : off+n]
	route uint32 // index into routes, customBit set for a custom domain
	// n is the name's length, or recDeployment: the name is its route's
	// deployment host, <deployment id>.<apps domain>, and not in the
	// arena (half the names, 5 MiB at 100,000 projects).
	n uint16
}

const recDeployment = 1 << 15

// route is what a deployment serves, once for all its names.
type route struct {
	project, deployment uuid.UUID
	first, n            uint32 // its backends
}

const customBit = 1 << 31

// seed keys the name hash; it is per process, so hashes are never stored.
var seed = maphash.MakeSeed()

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
	b := newBuilder(appsDomain, len(projects))
	for i := range instances {
		in := &instances[i]
		b.instance(in.ProjectID, in.DeploymentID, in.InstanceID, in.NodeProxy)
	}
	return b.finish(projects, domains)
}

// builder makes a table from instances as they come (the syncer streams
// them from the database), then projects and domains.
type builder struct {
	t            *Table
	byDeployment map[uuid.UUID]uint32
	pending      []pendingBackend
	nodes        map[string]uint32
	nodeNames    []string
}

// pendingBackend is an instance until finish lays out each route's
// instances side by side.
type pendingBackend struct {
	id          uuid.UUID
	route, node uint32
}

// newBuilder starts a table of about projects projects.
func newBuilder(appsDomain string, projects int) *builder {
	return &builder{
		t:            &Table{appsDomain: appsDomain, routes: make([]route, 0, projects+projects/8)},
		byDeployment: make(map[uuid.UUID]uint32, projects),
		pending:      make([]pendingBackend, 0, 3*projects),
		nodes:        map[string]uint32{},
	}
}

// instance adds one routable instance; nodeProxy need not outlive the call.
func (b *builder) instance(project, deployment, instance uuid.UUID, nodeProxy string) {
	t := b.t
	r, ok := b.byDeployment[deployment]
	if !ok {
		r = uint32(len(t.routes))
		b.byDeployment[deployment] = r
		t.routes = append(t.routes, route{project: project, deployment: deployment})
	}
	t.routes[r].n++
	node, ok := b.nodes[nodeProxy]
	if !ok {
		node = uint32(len(b.nodeNames))
		b.nodeNames = append(b.nodeNames, strings.Clone(nodeProxy))
		b.nodes[b.nodeNames[node]] = node
	}
	b.pending = append(b.pending, pendingBackend{id: instance, route: r, node: node})
}

// finish adds the projects' and domains' names and returns the table.
func (b *builder) finish(projects []Project, domains []Domain) *Table {
	t, byDeployment := b.t, b.byDeployment
	withInstances := len(t.routes)
	var next uint32
	for i := range t.routes {
		t.routes[i].first = next
		next += t.routes[i].n
		t.routes[i].n = 0
	}
	t.backends = make([]Backend, len(b.pending))
	for _, p := range b.pending {
		r := &t.routes[p.route]
		t.backends[r.first+r.n] = Backend{InstanceID: p.id, NodeProxy: b.nodeNames[p.node]}
		r.n++
	}
	b.pending = nil

	// Each project's route: its active deployment's (sharing its
	// instances), or one without backends.
	appsDomain := t.appsDomain
	active := make([]uint32, len(projects))
	for i, p := range projects {
		r, ok := byDeployment[p.ActiveDeploymentID]
		if !ok || t.routes[r].project != p.ID {
			nr := route{project: p.ID, deployment: p.ActiveDeploymentID}
			if ok {
				nr.first, nr.n = t.routes[r].first, t.routes[r].n
			}
			r = uint32(len(t.routes))
			t.routes = append(t.routes, nr)
		}
		active[i] = r
	}
	b.byDeployment = nil

	// Room for every name, sized (not grown) to what it will hold: each
	// deployment's host once (an active one's is usually its own route's
	// already; none in the arena), each slug, each domain.
	size, names := 0, len(t.routes)+len(projects)+len(domains)
	for _, p := range projects {
		size += len(p.Slug) + 1 + len(appsDomain)
	}
	for _, d := range domains {
		size += len(d.Name)
	}
	t.reserve(names, size)
	var buf [256]byte
	for i := range t.routes[:withInstances] {
		t.add(deploymentHost(buf[:0], t.routes[i].deployment, appsDomain), uint32(i))
	}
	for i, p := range projects {
		t.add(deploymentHost(buf[:0], p.ActiveDeploymentID, appsDomain), active[i])
	}
	for i, p := range projects {
		t.add(append(append(append(buf[:0], p.Slug...), '.'), appsDomain...), active[i])
	}
	if len(domains) > 0 {
		byProject := make(map[uuid.UUID]uint32, len(projects))
		for i, p := range projects {
			byProject[p.ID] = active[i]
		}
		for _, d := range domains {
			if r, ok := byProject[d.ProjectID]; ok {
				t.add([]byte(d.Name), r|customBit)
			}
		}
	}
	return t
}

const uuidLen = 36

// deploymentHost appends <id>.<appsDomain> to b.
func deploymentHost(b []byte, id uuid.UUID, appsDomain string) []byte {
	b = appendUUID(b, id)
	return append(append(b, '.'), appsDomain...)
}

// reserve makes room for names more names of size bytes in all.
func (t *Table) reserve(names, size int) {
	t.recs = slices.Grow(t.recs, names)
	t.arena = slices.Grow(t.arena, size)
	t.rehash(len(t.recs) + names)
}

// rehash sizes slots for n names (at most half full) and indexes recs.
func (t *Table) rehash(n int) {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	if size <= len(t.slots) {
		return
	}
	t.slots = make([]uint32, size)
	for i := range t.recs {
		t.place(t.recs[i].hash, uint32(i))
	}
}

// hashOf is the name's hash: the lower half picks the slot, the upper is
// kept to skip most comparisons.
func hashOf(name string) uint64 { return maphash.String(seed, name) }

func (t *Table) place(h32 uint32, rec uint32) {
	mask := uint32(len(t.slots) - 1)
	for i := uint32(hashSlot(h32)) & mask; ; i = (i + 1) & mask {
		if t.slots[i] == 0 {
			t.slots[i] = rec + 1
			return
		}
	}
}

// hashSlot spreads the stored upper half back over the slots, so rehash
// does not need the names.
func hashSlot(h32 uint32) uint32 { return h32 * 0x9e3779b1 }

// name is the name of r (a copy for a deployment host).
func (t *Table) name(r *nameRec) string {
	if r.n&recDeployment != 0 {
		return string(t.appendName(nil, r))
	}
	return unsafe.String(unsafe.SliceData(t.arena[r.off:]), int(r.n))
}

// appendName appends the name of r to b.
func (t *Table) appendName(b []byte, r *nameRec) []byte {
	if r.n&recDeployment != 0 {
		return deploymentHost(b, t.routes[r.route&^customBit].deployment, t.appsDomain)
	}
	return append(b, t.arena[r.off:r.off+uint32(r.n)]...)
}

// isDeploymentHost says whether name is <id>.<apps domain>.
func (t *Table) isDeploymentHost(name string, id uuid.UUID) bool {
	if len(name) != uuidLen+1+len(t.appsDomain) || t.appsDomain == "" || name[uuidLen] != '.' || name[uuidLen+1:] != t.appsDomain {
		return false
	}
	var buf [uuidLen]byte
	return string(appendUUID(buf[:0], id)) == name[:uuidLen]
}

// find is the record of a normal-form name, or -1.
func (t *Table) find(name string) int {
	if len(t.slots) == 0 {
		return -1
	}
	h32 := uint32(hashOf(name) >> 32)
	mask := uint32(len(t.slots) - 1)
	for i := hashSlot(h32) & mask; ; i = (i + 1) & mask {
		x := t.slots[i]
		if x == 0 {
			return -1
		}
		r := &t.recs[x-1]
		if r.hash != h32 {
			continue
		}
		if r.n&recDeployment != 0 {
			if t.isDeploymentHost(name, t.routes[r.route&^customBit].deployment) {
				return int(x - 1)
			}
		} else if int(r.n) == len(name) && string(t.arena[r.off:r.off+uint32(r.n)]) == name {
			return int(x - 1)
		}
	}
}

// add routes name to routes[r] (customBit for a custom domain) unless
// another project has it already. name may be a scratch buffer.
func (t *Table) add(name []byte, r uint32) {
	host := unsafe.String(unsafe.SliceData(name), len(name))
	if !hostname.IsPlain(host) {
		var err error
		if host, err = hostname.Normalize(host); err != nil {
			return
		}
	}
	if i := t.find(host); i >= 0 {
		had := &t.recs[i]
		if t.routes[had.route&^customBit].project != t.routes[r&^customBit].project {
			t.conflicts++
			return
		}
		t.reroute(i, r) // the project's own name, a better route
		return
	}
	t.insert(host, uint32(hashOf(host)>>32), r)
}

// reroute routes record i to r, keeping its name.
func (t *Table) reroute(i int, r uint32) {
	rec := &t.recs[i]
	if rec.n&recDeployment != 0 && t.routes[r&^customBit].deployment != t.routes[rec.route&^customBit].deployment {
		// Another deployment's route (a slug spelled like the id of a
		// preview): the name can no longer be told from the route.
		off := len(t.arena)
		t.arena = t.appendName(t.arena, rec)
		rec.off, rec.n = uint32(off), uint16(len(t.arena)-off)
	}
	rec.route = r
}

// insert adds a name find did not find.
func (t *Table) insert(host string, h32 uint32, r uint32) {
	if 2*(len(t.recs)+1) > len(t.slots) {
		t.rehash(2 * (len(t.recs) + 1))
	}
	rec := nameRec{hash: h32, route: r}
	if t.isDeploymentHost(host, t.routes[r&^customBit].deployment) {
		rec.n = recDeployment
	} else {
		rec.off, rec.n = uint32(len(t.arena)), uint16(len(host))
		t.arena = append(t.arena, host...)
	}
	t.recs = append(t.recs, rec)
	t.place(h32, uint32(len(t.recs)-1))
}

// copyRec inserts rec of from, a name find did not find, routed to r
// (a route of t with the same deployment as rec's in from).
func (t *Table) copyRec(from *Table, rec nameRec, r uint32) {
	if 2*(len(t.recs)+1) > len(t.slots) {
		t.rehash(2 * (len(t.recs) + 1))
	}
	if rec.n&recDeployment == 0 {
		name := from.arena[rec.off : rec.off+uint32(rec.n)]
		rec.off = uint32(len(t.arena))
		t.arena = append(t.arena, name...)
	}
	rec.route = r
	t.recs = append(t.recs, rec)
	t.place(rec.hash, uint32(len(t.recs)-1))
}

// get is the route of record i.
func (t *Table) get(i int) Route {
	v := t.recs[i].route
	r := &t.routes[v&^customBit]
	return Route{ProjectID: r.project, DeploymentID: r.deployment, Backends: t.backends[r.first : r.first+r.n : r.first+r.n], Custom: v&customBit != 0}
}

// All is every name and its route, in no particular order.
func (t *Table) All() iter.Seq2[string, Route] {
	return func(yield func(string, Route) bool) {
		for i := range t.recs {
			if !yield(t.name(&t.recs[i]), t.get(i)) {
				return
			}
		}
	}
}

// TableOf is a table of exactly the given names (their backends copied),
// for tests and tools; NewTable is the edge's.
func TableOf(routes map[string]Route) *Table {
	t := &Table{}
	t.reserve(len(routes), 0)
	for host, r := range routes {
		ri := uint32(len(t.routes))
		t.routes = append(t.routes, route{project: r.ProjectID, deployment: r.DeploymentID, first: uint32(len(t.backends)), n: uint32(len(r.Backends))})
		t.backends = append(t.backends, r.Backends...)
		if r.Custom {
			ri |= customBit
		}
		if len(host) <= 253 && t.find(host) < 0 { // no name is longer; n has 15 bits
			t.insert(host, uint32(hashOf(host)>>32), ri)
		}
	}
	return t
}

// Update returns a new table in which the given projects' names (and
// those of any project fresh has) are those of fresh, a table built from
// just those projects' rows; every other name is as in t. A project in projects but not in fresh has no names left.
// It copies the arrays, leaving out the replaced projects' (milliseconds
// at 100,000 projects), instead of rebuilding from the whole database
// (seconds); t is not changed.
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
	changed := make(map[uuid.UUID]bool, len(projects)+len(fresh.routes))
	for _, p := range projects {
		changed[p] = true
	}
	for i := range fresh.routes {
		changed[fresh.routes[i].project] = true
	}
	// Names fresh takes from another project: custom domains moving.
	moved := map[string]bool{}
	var buf []byte
	for i := range fresh.recs {
		buf = fresh.appendName(buf[:0], &fresh.recs[i])
		name := unsafe.String(unsafe.SliceData(buf), len(buf))
		if j := t.find(name); j >= 0 {
			had, got := t.recs[j].route, fresh.recs[i].route
			if !changed[t.routes[had&^customBit].project] && had&customBit != 0 && got&customBit != 0 {
				moved[string(buf)] = true
			}
		}
	}

	next := &Table{appsDomain: t.appsDomain}
	if next.appsDomain == "" {
		next.appsDomain = fresh.appsDomain
	}
	// Routes and backends of the projects that stay, renumbered.
	renumber := make([]uint32, len(t.routes))
	next.routes = make([]route, 0, len(t.routes)+len(fresh.routes))
	next.backends = make([]Backend, 0, len(t.backends)+len(fresh.backends))
	for i, r := range t.routes {
		if changed[r.project] {
			continue
		}
		renumber[i] = uint32(len(next.routes))
		first := uint32(len(next.backends))
		next.backends = append(next.backends, t.backends[r.first:r.first+r.n]...)
		r.first = first
		next.routes = append(next.routes, r)
	}
	size := 0
	for i := range t.recs {
		if t.recs[i].n&recDeployment == 0 {
			size += int(t.recs[i].n)
		}
	}
	next.reserve(len(t.recs)+len(fresh.recs), size+len(fresh.arena))
	for i := range t.recs {
		rec := t.recs[i]
		p := t.routes[rec.route&^customBit].project
		if changed[p] || len(moved) > 0 && rec.route&customBit != 0 && moved[t.name(&rec)] {
			continue
		}
		next.copyRec(t, rec, renumber[rec.route&^customBit]|rec.route&customBit)
	}
	base := uint32(len(next.routes))
	for _, r := range fresh.routes {
		first := uint32(len(next.backends))
		next.backends = append(next.backends, fresh.backends[r.first:r.first+r.n]...)
		r.first = first
		next.routes = append(next.routes, r)
	}
	for i := range fresh.recs {
		rec := fresh.recs[i]
		r := base + rec.route&^customBit | rec.route&customBit
		buf = fresh.appendName(buf[:0], &rec)
		name := unsafe.String(unsafe.SliceData(buf), len(buf))
		if j := next.find(name); j >= 0 {
			if next.routes[next.recs[j].route&^customBit].project == fresh.routes[rec.route&^customBit].project {
				next.reroute(j, r) // the project's own name (it was not in projects)
				continue
			}
			next.conflicts++ // another project's, and not a move
			continue
		}
		if fresh.appsDomain != next.appsDomain {
			next.insert(name, rec.hash, r) // its deployment hosts are another domain's
			continue
		}
		next.copyRec(fresh, rec, r)
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
	if i := t.find(hostHeader); i >= 0 {
		return t.get(i), true
	}
	if i := strings.LastIndexByte(hostHeader, ':'); i > 0 && isPort(hostHeader[i+1:]) {
		if j := t.find(hostHeader[:i]); j >= 0 {
			return t.get(j), true
		}
	}
	host, err := hostname.Normalize(hostHeader)
	if err != nil {
		return Route{}, false
	}
	if i := t.find(host); i >= 0 {
		return t.get(i), true
	}
	return Route{}, false
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
func (t *Table) Hosts() int { return len(t.recs) }

// Routes holds the current table; readers never see a table half built.
type Routes struct {
	current atomic.Pointer[Table]

	mu sync.Mutex // serialises Store
}

// Load returns the current table (an empty one before the first Store).
func (r *Routes) Load() *Table {
	if t := r.current.Load(); t != nil {
		return t
	}
	return &Table{}
}

// Store makes t the current table. It gives t's backends the health state
// the current table has for the same instances (found through their
// deployment), and new state to the rest; instances that left take theirs
// with the old table. t must not be in use by readers yet, unless it was
// stored before (its backends have their state already).
func (r *Routes) Store(t *Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.Load()
	byDeployment := make(map[uuid.UUID]uint32, len(old.routes))
	for i := range old.routes {
		byDeployment[old.routes[i].deployment] = uint32(i)
	}
	for _, rt := range t.routes {
		o, ok := byDeployment[rt.deployment]
		if !ok {
			continue
		}
		was := old.backends[old.routes[o].first : old.routes[o].first+old.routes[o].n]
		for i := range t.backends[rt.first : rt.first+rt.n] {
			b := &t.backends[rt.first+uint32(i)]
			for j := range was {
				if b.health == nil && was[j].InstanceID == b.InstanceID {
					b.health = was[j].health
				}
			}
		}
	}
	newHealth(t)
	r.current.Store(t)
}

// newHealth gives every backend of t without health state a new one, all
// in one allocation.
func newHealth(t *Table) {
	n := 0
	for i := range t.backends {
		if t.backends[i].health == nil {
			n++
		}
	}
	if n == 0 {
		return
	}
	hs := make([]health, n)
	for i := range t.backends {
		if t.backends[i].health == nil {
			t.backends[i].health = &hs[0]
			hs = hs[1:]
		}
	}
}

// StoreUpdate makes t, an Update of the current table by fresh, current.
// Only the backends t took from fresh need health state (the others kept
// theirs): an instance the current table has keeps its own.
func (r *Routes) StoreUpdate(t, fresh *Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	need := map[uuid.UUID]*health{}
	for i := range t.backends {
		if t.backends[i].health == nil {
			need[t.backends[i].InstanceID] = nil
		}
	}
	if len(need) > 0 {
		old := r.Load()
		for i := range old.backends {
			b := &old.backends[i]
			if h, ok := need[b.InstanceID]; ok && h == nil && b.health != nil {
				need[b.InstanceID] = b.health
			}
		}
		for i := range t.backends {
			if b := &t.backends[i]; b.health == nil {
				b.health = need[b.InstanceID]
			}
		}
		newHealth(t)
	}
	r.current.Store(t)
}

// lookupBytes is Lookup for a Host header still in the fast path's
// buffer: the common spellings are found without making a string of it.
func (t *Table) lookupBytes(h []byte) (Route, bool) {
	// find keeps nothing of the string, so it may view the buffer.
	return t.Lookup(unsafe.String(unsafe.SliceData(h), len(h)))
}
