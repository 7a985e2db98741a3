package edge

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
)

// sameTables fails unless a and b route the same names the same way.
func sameTables(t *testing.T, a, b *Table) {
	t.Helper()
	if a.Hosts() != b.Hosts() {
		t.Fatalf("%d names, want %d", b.Hosts(), a.Hosts())
	}
	for host, want := range a.All() {
		got, ok := b.Lookup(host)
		if !ok || got.ProjectID != want.ProjectID || got.DeploymentID != want.DeploymentID || got.Custom != want.Custom ||
			!slices.EqualFunc(got.Backends, want.Backends, func(x, y Backend) bool { return x.InstanceID == y.InstanceID && x.NodeProxy == y.NodeProxy }) {
			t.Fatalf("%s: %+v, %v; want %+v", host, got, ok, want)
		}
	}
}

// world1k is 1,000 projects, each with an active deployment of 3
// instances, every tenth with a preview of 1 and a custom domain.
func world1k() ([]Project, []Instance, []Domain) {
	var (
		projects  []Project
		instances []Instance
		domains   []Domain
	)
	for i := range 1000 {
		p := Project{ID: id.New(), Slug: fmt.Sprintf("app%d", i), ActiveDeploymentID: id.New()}
		projects = append(projects, p)
		for n := range 3 {
			instances = append(instances, Instance{ProjectID: p.ID, DeploymentID: p.ActiveDeploymentID, InstanceID: id.New(), NodeProxy: fmt.Sprintf("10.0.0.%d:8090", n)})
		}
		if i%10 == 0 {
			instances = append(instances, Instance{ProjectID: p.ID, DeploymentID: id.New(), InstanceID: id.New(), NodeProxy: "10.0.0.9:8090"})
			domains = append(domains, Domain{Name: fmt.Sprintf("www.customer%d.example", i), ProjectID: p.ID})
		}
	}
	return projects, instances, domains
}

// The snapshot restores every name as it was (custom flags, backends,
// node addresses), is a small fraction of the JSON it replaced, and a
// damaged one is refused rather than served.
func TestSnapshotRoundTripsCompactlyAndRefusesDamage(t *testing.T) {
	projects, instances, domains := world1k()
	tbl := NewTable("zeitwork.app", projects, instances, domains)
	path := filepath.Join(t.TempDir(), "routes")
	if err := SaveSnapshot(path, tbl); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	sameTables(t, tbl, back)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// JSON was about 800 bytes a project; the binary form is the ids
	// (16 bytes each) and the slugs, little more.
	if per := len(raw) / len(projects); per > 150 {
		t.Errorf("snapshot is %d bytes a project", per)
	}
	for name, damage := range map[string][]byte{
		"a flipped bit": func() []byte { b := slices.Clone(raw); b[len(b)/2] ^= 1; return b }(),
		"truncated":     raw[:len(raw)-100],
		"empty":         {},
		"not one":       []byte("hello"),
	} {
		bad := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(bad, damage, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSnapshot(bad); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The JSON of earlier versions still restores, so an upgraded edge
	// that starts without the database serves what the old one knew.
	p := id.New()
	legacy := filepath.Join(t.TempDir(), "routes.json")
	js := fmt.Sprintf(`{"routes":{"shop.example.com":{"project_id":%q,"deployment_id":%q,"backends":[{"instance_id":%q,"node_proxy":"10.0.0.1:8090"}],"custom":true}}}`, p, id.New(), id.New())
	if err := os.WriteFile(legacy, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := LoadSnapshot(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := old.Lookup("shop.example.com"); !ok || r.ProjectID != p || !r.Custom || len(r.Backends) != 1 || r.Backends[0].NodeProxy != "10.0.0.1:8090" {
		t.Fatalf("legacy snapshot: %+v, %v", r, ok)
	}
}

// An Update is the table a full rebuild would make of the same rows, for
// changed, new and deleted projects alike (the arrays are renumbered, so
// a wrong index would route a name to another project's instances).
func TestUpdateEqualsAFullRebuild(t *testing.T) {
	projects, instances, domains := world1k()
	tbl := NewTable("zeitwork.app", projects, instances, domains)
	var changed []uuid.UUID
	var freshP []Project
	var freshI []Instance
	var freshD []Domain
	for i := 0; i < len(projects); i += 97 {
		p := &projects[i]
		changed = append(changed, p.ID)
		p.Slug += "-renamed"
		p.ActiveDeploymentID = id.New()
		freshP = append(freshP, *p)
		in := Instance{ProjectID: p.ID, DeploymentID: p.ActiveDeploymentID, InstanceID: id.New(), NodeProxy: "10.0.0.7:8090"}
		instances = append(instances, in)
		freshI = append(freshI, in)
		for _, d := range domains {
			if d.ProjectID == p.ID {
				freshD = append(freshD, d)
			}
		}
		for _, in := range instances {
			if in.ProjectID == p.ID && in.DeploymentID != p.ActiveDeploymentID && in.NodeProxy == "10.0.0.9:8090" {
				freshI = append(freshI, in) // the preview stays
			}
		}
	}
	// One project deleted.
	gone := projects[500].ID
	changed = append(changed, gone)
	projects = slices.Delete(projects, 500, 501)
	instances = slices.DeleteFunc(instances, func(in Instance) bool { return in.ProjectID == gone })
	domains = slices.DeleteFunc(domains, func(d Domain) bool { return d.ProjectID == gone })
	// Old deployments of the changed projects are no longer routable.
	keep := map[uuid.UUID]bool{}
	for _, in := range freshI {
		keep[in.DeploymentID] = true
	}
	instances = slices.DeleteFunc(instances, func(in Instance) bool {
		return slices.Contains(changed, in.ProjectID) && !keep[in.DeploymentID]
	})

	next := tbl.Update(changed, NewTable("zeitwork.app", freshP, freshI, freshD))
	if next.Conflicts() != 0 {
		t.Fatalf("%d conflicts", next.Conflicts())
	}
	sameTables(t, NewTable("zeitwork.app", projects, instances, domains), next)
}

// Health state (load, failures) follows an instance from table to table,
// through full rebuilds and updates; a new instance gets its own.
func TestHealthFollowsInstancesAcrossTables(t *testing.T) {
	p := Project{ID: id.New(), Slug: "shop", ActiveDeploymentID: id.New()}
	ins := []Instance{
		{ProjectID: p.ID, DeploymentID: p.ActiveDeploymentID, InstanceID: id.New(), NodeProxy: "n1"},
		{ProjectID: p.ID, DeploymentID: p.ActiveDeploymentID, InstanceID: id.New(), NodeProxy: "n2"},
	}
	var routes Routes
	routes.Store(NewTable("zeitwork.app", []Project{p}, ins, nil))
	r, _ := routes.Load().Lookup("shop.zeitwork.app")
	if r.Backends[0].health == nil || r.Backends[0].health == r.Backends[1].health {
		t.Fatal("backends without their own health state")
	}
	r.Backends[0].health.down(time.Now())
	down := r.Backends[0].health

	added := append(slices.Clone(ins), Instance{ProjectID: p.ID, DeploymentID: p.ActiveDeploymentID, InstanceID: id.New(), NodeProxy: "n3"})
	routes.Store(NewTable("zeitwork.app", []Project{p}, added, nil))
	r, _ = routes.Load().Lookup("shop.zeitwork.app")
	if r.Backends[0].health != down || r.Backends[2].health == nil || r.Backends[2].health == down {
		t.Fatal("a full rebuild lost health state")
	}

	kept := r.Backends[1].health
	fresh := NewTable("zeitwork.app", []Project{p}, added[1:], nil)
	routes.StoreUpdate(routes.Load().Update([]uuid.UUID{p.ID}, fresh), fresh)
	r, _ = routes.Load().Lookup("shop.zeitwork.app")
	if len(r.Backends) != 2 || r.Backends[0].InstanceID != added[1].InstanceID || r.Backends[0].health == nil || r.Backends[1].health == nil {
		t.Fatalf("update: %+v", r.Backends)
	}
	if r.Backends[0].health != kept || r.Backends[1].health == down {
		t.Fatal("update gave an instance another's health state")
	}
}

// A deployment host is kept as a flag, not as bytes; a slug spelled like a
// preview's id (which the database forbids) must still route as the
// project's slug, not lose its name to the flag.
func TestSlugSpelledLikeAPreviewIDKeepsItsName(t *testing.T) {
	p, active, preview := id.New(), id.New(), id.New()
	tbl := NewTable("zeitwork.app", []Project{{ID: p, Slug: preview.String(), ActiveDeploymentID: active}}, []Instance{
		{ProjectID: p, DeploymentID: active, InstanceID: id.New(), NodeProxy: "n1"},
		{ProjectID: p, DeploymentID: preview, InstanceID: id.New(), NodeProxy: "n2"},
	}, nil)
	check := func(tbl *Table) {
		t.Helper()
		if r, ok := tbl.Lookup(preview.String() + ".zeitwork.app"); !ok || r.DeploymentID != active {
			t.Fatalf("slug host: %+v, %v", r, ok)
		}
		if r, ok := tbl.Lookup(active.String() + ".zeitwork.app"); !ok || r.DeploymentID != active {
			t.Fatalf("active host: %+v, %v", r, ok)
		}
		if tbl.Hosts() != 2 {
			t.Fatalf("%d names", tbl.Hosts())
		}
	}
	check(tbl)
	path := filepath.Join(t.TempDir(), "routes")
	if err := SaveSnapshot(path, tbl); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	check(back)
	check(NewTable("zeitwork.app", nil, nil, nil).Update(nil, tbl))
}

// BenchmarkSnapshot100kHosts writes and restores the snapshot of 100,000
// projects (200,000 names, 300,000 instances); MiB is its size.
func BenchmarkSnapshot100kHosts(b *testing.B) {
	projects, instances := hundredK()
	tbl := NewTable("zeitwork.app", projects, instances, nil)
	path := filepath.Join(b.TempDir(), "routes")
	if err := SaveSnapshot(path, tbl); err != nil {
		b.Fatal(err)
	}
	b.Run("Save", func(b *testing.B) {
		for b.Loop() {
			if err := SaveSnapshot(path, tbl); err != nil {
				b.Fatal(err)
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
	})
	b.Run("Restore", func(b *testing.B) {
		for b.Loop() {
			if _, err := LoadSnapshot(path); err != nil {
				b.Fatal(err)
			}
		}
	})
}
