package edge

import (
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/hostname"
	"github.com/zeitwork/zeitwork/internal/id"
)

// FuzzLookup: route lookup agrees with host-name normalisation: a domain
// stored as the client typed it is found under every spelling that
// normalises to the same name, and nothing else is.
func FuzzLookup(f *testing.F) {
	for _, s := range []string{"app.example.com", "A.B:1", "[::1]:80", "bücher.de.", "1.2.3.4", "xn--", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := hostname.Normalize(in)
		if err != nil {
			return
		}
		p := Project{ID: id.New(), Slug: "shop", ActiveDeploymentID: id.New()}
		tbl := NewTable("zeitwork.app", []Project{p}, nil, []Domain{{Name: in, ProjectID: p.ID}})
		for _, host := range []string{in, out, strings.ToUpper(out), out + ".", out + ":8443"} {
			r, ok := tbl.Lookup(host)
			h, err := hostname.Normalize(host)
			if same := err == nil && h == out; same != (ok && r.ProjectID == p.ID) && h != "shop.zeitwork.app" {
				t.Fatalf("Lookup(%q) = %v for the domain %q (normalises to %q, %v)", host, ok, in, h, err)
			}
			// The fast path's lookup, on the Host header's bytes, agrees.
			if rb, okb := tbl.lookupBytes([]byte(host)); okb != ok || rb.ProjectID != r.ProjectID {
				t.Fatalf("lookupBytes(%q) = %v, Lookup = %v", host, okb, ok)
			}
		}
	})
}

func fixture() (*Table, uuid.UUID, uuid.UUID) {
	p1, p2, p3, d1, d2, d3 := id.New(), id.New(), id.New(), id.New(), id.New(), id.New()
	projects := []Project{{ID: p1, Slug: "shop", ActiveDeploymentID: d1}, {ID: p2, Slug: "blog", ActiveDeploymentID: d2}, {ID: p3, Slug: "down", ActiveDeploymentID: d3}}
	instances := []Instance{
		{ProjectID: p1, DeploymentID: d1, InstanceID: id.New(), NodeProxy: "10.0.0.1:8090"},
		{ProjectID: p1, DeploymentID: d1, InstanceID: id.New(), NodeProxy: "10.0.0.2:8090"},
		{ProjectID: p1, DeploymentID: d1, InstanceID: id.New(), NodeProxy: "10.0.0.3:8090"},
		{ProjectID: p2, DeploymentID: d2, InstanceID: id.New(), NodeProxy: "10.0.0.1:8090"},
	}
	domains := []Domain{{Name: "Shop.Example.com.", ProjectID: p1}, {Name: "orphan.example.com", ProjectID: id.New()}}
	return NewTable("zeitwork.app", projects, instances, domains), p1, d1
}

func TestTableRoutesProjectDeploymentAndCustomHosts(t *testing.T) {
	tbl, p1, d1 := fixture()
	for _, host := range []string{"shop.zeitwork.app", "SHOP.zeitwork.app:443", d1.String() + ".zeitwork.app", "shop.example.com"} {
		r, ok := tbl.Lookup(host)
		if !ok || r.ProjectID != p1 || r.DeploymentID != d1 || len(r.Backends) != 3 {
			t.Errorf("Lookup(%q) = %+v, %v", host, r, ok)
		}
	}
	for _, host := range []string{"unknown.zeitwork.app", "orphan.example.com", "10.0.0.1", "zeitwork.app"} {
		if r, ok := tbl.Lookup(host); ok {
			t.Errorf("Lookup(%q) = %+v, want no route", host, r)
		}
	}
	// A project whose active deployment has no healthy instance is known
	// (503), not unknown (404).
	if r, ok := tbl.Lookup("down.zeitwork.app"); !ok || len(r.Backends) != 0 {
		t.Errorf("Lookup(down) = %+v, %v; want a route without backends", r, ok)
	}
}

func TestTableServesPreviewsOfInactiveDeployments(t *testing.T) {
	p, active, preview := id.New(), id.New(), id.New()
	tbl := NewTable("zeitwork.app", []Project{{ID: p, Slug: "shop", ActiveDeploymentID: active}}, []Instance{
		{ProjectID: p, DeploymentID: active, InstanceID: id.New(), NodeProxy: "10.0.0.1:8090"},
		{ProjectID: p, DeploymentID: preview, InstanceID: id.New(), NodeProxy: "10.0.0.2:8090"},
		{ProjectID: p, DeploymentID: preview, InstanceID: id.New(), NodeProxy: "10.0.0.3:8090"},
	}, nil)
	if r, ok := tbl.Lookup(preview.String() + ".zeitwork.app"); !ok || r.DeploymentID != preview || len(r.Backends) != 2 {
		t.Fatalf("preview host = %+v, %v", r, ok)
	}
	if r, ok := tbl.Lookup("shop.zeitwork.app"); !ok || r.DeploymentID != active || len(r.Backends) != 1 {
		t.Fatalf("project host = %+v, %v", r, ok)
	}
}

func TestSwapIsAtomicAndSnapshotsRoundTrip(t *testing.T) {
	var routes Routes
	if _, ok := routes.Load().Lookup("shop.zeitwork.app"); ok {
		t.Fatal("empty routes resolved a host")
	}
	tbl, p1, _ := fixture()
	// Readers during swaps see either table whole, never a mix.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				t := routes.Load()
				if r, ok := t.Lookup("shop.zeitwork.app"); ok && len(r.Backends) != 3 {
					panic(fmt.Sprintf("half a table: %+v", r))
				}
			}
		})
	}
	for range 1000 {
		routes.Store(tbl)
		routes.Store(NewTable("zeitwork.app", nil, nil, nil))
	}
	close(stop)
	wg.Wait()

	path := filepath.Join(t.TempDir(), "routes.json")
	if err := SaveSnapshot(path, tbl); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := back.Lookup("shop.example.com"); !ok || r.ProjectID != p1 || len(r.Backends) != 3 {
		t.Fatalf("snapshot lookup = %+v, %v", r, ok)
	}
	if _, err := LoadSnapshot(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("missing snapshot loaded")
	}
}

// hundredK is the input of a table of 100,000 projects with 3 instances
// each: 200,000 host names (the project's and its deployment's).
func hundredK() ([]Project, []Instance) {
	projects := make([]Project, 100_000)
	instances := make([]Instance, 0, 300_000)
	for i := range projects {
		projects[i] = Project{ID: id.New(), Slug: fmt.Sprintf("app%d", i), ActiveDeploymentID: id.New()}
		for n := range 3 {
			instances = append(instances, Instance{ProjectID: projects[i].ID, DeploymentID: projects[i].ActiveDeploymentID,
				InstanceID: id.New(), NodeProxy: fmt.Sprintf("10.0.%d.%d:8090", i%250, n)})
		}
	}
	return projects, instances
}

// BenchmarkLookup100kHosts looks up every project's host in turn, as
// clients send them (lower case, some with a port); the Mixed variant
// sends names that need normalising (upper case, trailing dot).
func BenchmarkLookup100kHosts(b *testing.B) {
	projects, instances := hundredK()
	tbl := NewTable("zeitwork.app", projects, instances, nil)
	for _, v := range []struct {
		name string
		host func(i int) string
	}{
		{"AsSent", func(i int) string {
			if i%2 == 0 {
				return fmt.Sprintf("app%d.zeitwork.app", i)
			}
			return fmt.Sprintf("app%d.zeitwork.app:443", i)
		}},
		{"Mixed", func(i int) string { return fmt.Sprintf("App%d.Zeitwork.app.", i) }},
	} {
		hosts := make([]string, 100_000)
		for i := range hosts {
			hosts[i] = v.host(i)
		}
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := tbl.Lookup(hosts[i%len(hosts)]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

// BenchmarkBuildTable100kHosts measures a full rebuild from rows already
// read, and reports the table's heap size.
func BenchmarkBuildTable100kHosts(b *testing.B) {
	projects, instances := hundredK()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tbl := NewTable("zeitwork.app", projects, instances, nil)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(tbl)
	for b.Loop() {
		NewTable("zeitwork.app", projects, instances, nil)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-table")
}

func TestUpdateReplacesOnlyTheChangedProjects(t *testing.T) {
	a, b, c := id.New(), id.New(), id.New()
	a1, a2, b1, c1 := id.New(), id.New(), id.New(), id.New()
	old := NewTable("zeitwork.app",
		[]Project{{ID: a, Slug: "shop", ActiveDeploymentID: a1}, {ID: b, Slug: "blog", ActiveDeploymentID: b1}, {ID: c, Slug: "gone", ActiveDeploymentID: c1}},
		[]Instance{{ProjectID: a, DeploymentID: a1, InstanceID: id.New(), NodeProxy: "n1"}, {ProjectID: b, DeploymentID: b1, InstanceID: id.New(), NodeProxy: "n2"}},
		[]Domain{{Name: "shop.example.com", ProjectID: a}, {Name: "www.example.com", ProjectID: a}})

	// a: a new deployment, a new slug, www.example.com moved to b; c: deleted.
	freshA := NewTable("zeitwork.app", []Project{{ID: a, Slug: "store", ActiveDeploymentID: a2}},
		[]Instance{{ProjectID: a, DeploymentID: a2, InstanceID: id.New(), NodeProxy: "n3"}},
		[]Domain{{Name: "shop.example.com", ProjectID: a}})
	freshB := NewTable("zeitwork.app", []Project{{ID: b, Slug: "blog", ActiveDeploymentID: b1}},
		[]Instance{{ProjectID: b, DeploymentID: b1, InstanceID: id.New(), NodeProxy: "n2"}},
		[]Domain{{Name: "www.example.com", ProjectID: b}})
	// b is updated first, then a: a's removal of its old names must not
	// take www.example.com from b.
	next := old.Update([]uuid.UUID{b}, freshB).Update([]uuid.UUID{a, c}, freshA)

	want := map[string]uuid.UUID{
		"store.zeitwork.app": a2, a2.String() + ".zeitwork.app": a2, "shop.example.com": a2,
		"blog.zeitwork.app": b1, b1.String() + ".zeitwork.app": b1, "www.example.com": b1,
	}
	if next.Hosts() != len(want) {
		t.Errorf("table has %d names, want %d: %v", next.Hosts(), len(want), slices.Collect(maps.Keys(maps.Collect(next.All()))))
	}
	for host, dep := range want {
		if r, ok := next.Lookup(host); !ok || r.DeploymentID != dep {
			t.Errorf("Lookup(%s) = %v, %v; want deployment %s", host, r.DeploymentID, ok, dep)
		}
	}
	// The old table is untouched: readers holding it see it whole.
	if r, ok := old.Lookup("shop.zeitwork.app"); !ok || r.DeploymentID != a1 || old.Hosts() != 8 {
		t.Fatalf("old table changed: %v %v, %d names", r, ok, old.Hosts())
	}
	// Updating from a snapshot (no index yet) works the same way.
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := SaveSnapshot(path, old); err != nil {
		t.Fatal(err)
	}
	snap, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Update([]uuid.UUID{c}, NewTable("zeitwork.app", nil, nil, nil)).Lookup("gone.zeitwork.app"); ok {
		t.Fatal("a deleted project still routes after an update of a restored table")
	}
}

// BenchmarkUpdate100kHosts replaces one project's names in a table of
// 100,000 projects: the work behind one route change at that scale.
func BenchmarkUpdate100kHosts(b *testing.B) {
	projects, instances := hundredK()
	var routes Routes
	routes.Store(NewTable("zeitwork.app", projects, instances, nil))
	p := projects[500]
	fresh := NewTable("zeitwork.app", []Project{p}, instances[1500:1503], []Domain{{Name: "shop.example.com", ProjectID: p.ID}})
	for b.Loop() {
		routes.StoreUpdate(routes.Load().Update([]uuid.UUID{p.ID}, fresh), fresh)
	}
}

// A name is never taken from the project that has it: the database keeps
// slugs, deployment hosts and custom domains apart, and the table does not
// rely on that alone.
func TestTableNeverGivesAProjectsNameToAnother(t *testing.T) {
	a, b := id.New(), id.New()
	a1, b1 := id.New(), id.New()
	// b's slug is a's deployment id, and b has a custom domain that is
	// a's slug host: neither may take a's names, in either order.
	for _, order := range [][]Project{
		{{ID: a, Slug: "shop", ActiveDeploymentID: a1}, {ID: b, Slug: a1.String(), ActiveDeploymentID: b1}},
		{{ID: b, Slug: a1.String(), ActiveDeploymentID: b1}, {ID: a, Slug: "shop", ActiveDeploymentID: a1}},
	} {
		tbl := NewTable("zeitwork.app", order, nil, []Domain{{Name: "shop.zeitwork.app", ProjectID: b}})
		for _, host := range []string{"shop.zeitwork.app", a1.String() + ".zeitwork.app"} {
			if r, ok := tbl.Lookup(host); !ok || r.ProjectID != a {
				t.Errorf("Lookup(%s) = project %s, %v; want a's", host, r.ProjectID, ok)
			}
		}
		if tbl.Conflicts() != 2 {
			t.Errorf("Conflicts = %d, want 2", tbl.Conflicts())
		}
	}

	// An update of b alone cannot take a's slug host either: it stays a's
	// and the clash is counted, for the syncer to rebuild from the
	// database.
	old := NewTable("zeitwork.app", []Project{{ID: a, Slug: "shop", ActiveDeploymentID: a1}, {ID: b, Slug: "blog", ActiveDeploymentID: b1}}, nil,
		[]Domain{{Name: "app.example.com", ProjectID: a}})
	freshB := NewTable("zeitwork.app", []Project{{ID: b, Slug: "shop", ActiveDeploymentID: b1}}, nil,
		[]Domain{{Name: a1.String() + ".zeitwork.app", ProjectID: b}})
	next := old.Update([]uuid.UUID{b}, freshB)
	for _, host := range []string{"shop.zeitwork.app", a1.String() + ".zeitwork.app"} {
		if r, ok := next.Lookup(host); !ok || r.ProjectID != a {
			t.Errorf("after b's update, Lookup(%s) = project %s, %v; want a's", host, r.ProjectID, ok)
		}
	}
	if next.Conflicts() != 2 {
		t.Errorf("Conflicts after b's update = %d, want 2", next.Conflicts())
	}
	// b's own names are b's; a's later update (a renamed) leaves b's alone.
	if _, ok := next.Lookup("blog.zeitwork.app"); ok {
		t.Error("b's old slug still routed")
	}
	// A custom domain moved from a to b does move at b's update.
	moved := old.Update([]uuid.UUID{b}, NewTable("zeitwork.app", []Project{{ID: b, Slug: "blog", ActiveDeploymentID: b1}}, nil,
		[]Domain{{Name: "app.example.com", ProjectID: b}}))
	if r, ok := moved.Lookup("app.example.com"); !ok || r.ProjectID != b || moved.Conflicts() != 0 {
		t.Errorf("moved custom domain: Lookup = project %s, %v, %d conflicts; want b's, none", r.ProjectID, ok, moved.Conflicts())
	}
	if after := moved.Update([]uuid.UUID{a}, NewTable("zeitwork.app", []Project{{ID: a, Slug: "shop", ActiveDeploymentID: a1}}, nil, nil)); !func() bool {
		r, ok := after.Lookup("app.example.com")
		return ok && r.ProjectID == b
	}() {
		t.Error("a's update after the move took app.example.com from b")
	}
}
