package project_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const (
	appsDomain = "apps.test"
	edgeHost   = "edge.zeitwork.test"
	builderID  = "builder-1"
)

// world is a database with users, a node, and what a running project has.
type world struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	dns     *dnstest.Server
	domains *domains.Service
	node    node.Node
	owner   account.User
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	pool := testdb.New(t)
	w := &world{t: t, ctx: ctx, pool: pool, dns: dnstest.Start(t)}
	w.owner = w.user(1, "owner")
	q, err := queue.New(pool, nil, config.Queue{JobTimeout: time.Minute, RescueAfter: time.Hour}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	w.domains, err = domains.New(pool, q, domains.Config{
		EdgeHost: edgeHost, PlatformDomains: []string{appsDomain}, Resolver: domains.NewResolver(w.dns.Addr),
		CheckInterval: time.Minute, MaxCheckInterval: time.Hour, GiveUpAfter: 24 * time.Hour,
	}, zlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	w.node, err = node.Store{DB: pool}.Register(ctx, ipam.DefaultCluster, node.Registration{
		ID: id.New(), Hostname: "w1", InternalAddress: "100.64.0.1:7000", CPUMillis: 4000, MemoryMB: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) user(n int64, login string) account.User {
	w.t.Helper()
	u, _, err := account.Store{DB: w.pool}.SignIn(w.ctx, account.Profile{GitHubUserID: n, Login: login, Email: login + "@example.com"})
	if err != nil {
		w.t.Fatal(err)
	}
	return u
}

func (w *world) join(u account.User, org uuid.UUID, role string) {
	w.t.Helper()
	if _, err := db.New(w.pool).OrganisationMemberCreate(w.ctx, db.OrganisationMemberCreateParams{ID: id.New(), OrganisationID: org, UserID: u.ID, Role: role}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pool.Exec(w.ctx, sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

func (w *world) count(sql string, args ...any) int {
	w.t.Helper()
	var n int
	if err := w.pool.QueryRow(w.ctx, sql, args...).Scan(&n); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// running is a project serving from an active deployment with instances
// on the node, a verified domain, and a second deployment whose build a
// builder holds.
type running struct {
	project   project.Project
	active    uuid.UUID
	building  build.Build
	instances []instance.Instance
	domain    string
}

func (w *world) running(name string) running {
	w.t.Helper()
	ctx := w.ctx
	p, err := project.Store{DB: w.pool}.Create(ctx, w.owner.ID, project.New{Name: name, Organisation: w.org()})
	if err != nil {
		w.t.Fatal(err)
	}
	r := running{project: p, domain: p.Slug + ".example.com"}
	builds := build.NewStore(w.pool)
	dep := func(sha string) (db.Deployment, build.Build) {
		d, b, err := builds.Create(ctx, db.DeploymentCreateParams{ID: id.New(), ProjectID: p.ID, SourceType: "github", GithubCommitSha: &sha, Replicas: 3})
		if err != nil {
			w.t.Fatal(err)
		}
		return d, b
	}
	active, _ := dep("aaaa")
	r.active = active.ID
	img := id.New()
	w.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/'||$3::text, 'v1', 'sha256:' || repeat('a', 64))`, img, p.ID, p.Slug)
	w.exec(`UPDATE builds SET status = 'succeeded', finished_at = now() WHERE deployment_id = $1`, active.ID)
	w.exec(`UPDATE deployments SET image_id = $1, status = 'active', active_at = now() WHERE id = $2`, img, active.ID)
	w.exec(`UPDATE projects SET active_deployment_id = $1 WHERE id = $2`, active.ID, p.ID)
	for range 3 {
		in, err := instance.Store{DB: w.pool}.Create(ctx, w.node, instance.New{DeploymentID: active.ID, Port: 8080, CPUMillis: 250, MemoryMB: 256})
		if err != nil {
			w.t.Fatal(err)
		}
		w.exec(`UPDATE instances SET state = 'healthy' WHERE id = $1`, in.ID)
		r.instances = append(r.instances, in)
	}
	// One instance of an earlier rollout stopped, its capacity given back
	// already: the delete must not give it back twice.
	w.exec(`UPDATE instances SET desired_state = 'stopped', state = 'stopped' WHERE id = $1`, r.instances[2].ID)
	if err := (instance.Store{DB: w.pool}).ReleaseCapacity(ctx); err != nil {
		w.t.Fatal(err)
	}

	_, r.building = dep("bbbb")
	if r.building, err = builds.Claim(ctx, r.building.ID, builderID, time.Now().Add(time.Hour)); err != nil {
		w.t.Fatal(err)
	}
	if _, err := builds.StartDeployment(ctx, r.building); err != nil {
		w.t.Fatal(err)
	}

	w.verifiedDomain(p.ID, r.domain)
	return r
}

// verifiedDomain adds name to project and verifies it through DNS, with
// the TXT token (the proof that also moves a name between projects).
func (w *world) verifiedDomain(project uuid.UUID, name string) domains.Domain {
	w.t.Helper()
	d, err := w.domains.Add(w.ctx, project, name)
	if err != nil {
		w.t.Fatal(err)
	}
	w.dns.SetTXT(domains.TXTPrefix+name, d.VerificationToken)
	if d, err = w.domains.Check(w.ctx, d.ID); err != nil || d.Status != domains.StatusVerified {
		w.t.Fatalf("verify %s: %+v %v", name, d, err)
	}
	return d
}

func (w *world) org() uuid.UUID {
	w.t.Helper()
	orgs, err := db.New(w.pool).OrganisationListByUser(w.ctx, w.owner.ID)
	if err != nil || len(orgs) != 1 {
		w.t.Fatalf("organisations: %v %v", orgs, err)
	}
	return orgs[0].ID
}

// routes is the edge's table as it would be built now.
func (w *world) routes() *edge.Table {
	w.t.Helper()
	r := &edge.Routes{}
	if err := (&edge.Syncer{Pool: w.pool, Routes: r, AppsDomain: appsDomain, Log: zlog.Discard()}).Sync(w.ctx); err != nil {
		w.t.Fatal(err)
	}
	return r.Load()
}

func (w *world) free() (cpu, mem int32) {
	w.t.Helper()
	n, err := node.Store{DB: w.pool}.Get(w.ctx, w.node.ID)
	if err != nil {
		w.t.Fatal(err)
	}
	return n.FreeCPUMillis, n.FreeMemoryMB
}

func TestDeleteStopsEverything(t *testing.T) {
	w := newWorld(t)
	ctx := w.ctx
	store := project.Store{DB: w.pool}
	r := w.running("shop")
	other := w.running("blog") // must come through untouched
	host := r.project.Slug + "." + appsDomain
	before := w.routes()
	for _, h := range []string{host, r.domain, r.active.String() + "." + appsDomain, other.domain} {
		if _, ok := before.Lookup(h); !ok {
			t.Fatalf("%s is not routed before the delete", h)
		}
	}
	cpu, mem := w.free()
	if cpu != 4000-4*node.CPURequest(250) || mem != 4096-4*256 {
		t.Fatalf("free before: %d millis, %d MB", cpu, mem)
	}

	// Who may: a stranger sees nothing, a member is refused, an admin may.
	stranger, member, admin := w.user(2, "stranger"), w.user(3, "member"), w.user(4, "admin")
	w.join(member, r.project.OrganisationID, project.RoleMember)
	w.join(admin, r.project.OrganisationID, project.RoleAdmin)
	if _, err := store.Delete(ctx, stranger.ID, r.project.ID); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("stranger's delete: %v", err)
	}
	if _, err := store.Delete(ctx, member.ID, r.project.ID); !errors.Is(err, project.ErrForbidden) {
		t.Fatalf("member's delete: %v", err)
	}
	if n := w.count(`SELECT count(*) FROM instances`); n != 6 {
		t.Fatalf("%d instances after refused deletes", n)
	}

	// The agents are woken: a deleted row fires no trigger of its own.
	listen, err := pgx.Connect(ctx, w.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, "LISTEN zeitwork_instances"); err != nil {
		t.Fatal(err)
	}

	d, err := store.Delete(ctx, admin.ID, r.project.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Instances != 3 || d.Deployments != 2 || d.Domains != 1 {
		t.Fatalf("deleted %+v", d)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n, err := listen.WaitForNotification(wctx); err != nil || n.Payload != w.node.ID.String() {
		t.Fatalf("node agent not woken: %+v %v", n, err)
	}

	// Nothing of it is left, and the capacity its instances held is back.
	for table, sql := range map[string]string{
		"projects":              `SELECT count(*) FROM projects WHERE id = $1`,
		"deployments":           `SELECT count(*) FROM deployments WHERE project_id = $1`,
		"builds":                `SELECT count(*) FROM builds JOIN deployments ON deployments.id = builds.deployment_id WHERE project_id = $1`,
		"images":                `SELECT count(*) FROM images WHERE project_id = $1`,
		"domains":               `SELECT count(*) FROM domains WHERE project_id = $1`,
		"environment_variables": `SELECT count(*) FROM environment_variables WHERE project_id = $1`,
	} {
		if n := w.count(sql, r.project.ID); n != 0 {
			t.Errorf("%d rows left in %s", n, table)
		}
	}
	if n := w.count(`SELECT count(*) FROM instances`); n != 3 {
		t.Errorf("%d instances left, want the other project's 3", n)
	}
	if cpu, mem := w.free(); cpu != 4000-2*node.CPURequest(250) || mem != 4096-2*256 {
		t.Errorf("free after: %d millis, %d MB; want only the other project's running instances held", cpu, mem)
	}

	// The edge answers 404 for every name of it; the other project still routes.
	after := w.routes()
	for _, h := range []string{host, r.domain, r.active.String() + "." + appsDomain} {
		if route, ok := after.Lookup(h); ok {
			t.Errorf("%s still routed after the delete: %+v", h, route)
		}
	}
	if _, ok := after.Lookup(other.domain); !ok {
		t.Errorf("the other project's domain is no longer routed")
	}

	// Its domain can be claimed and verified by another project.
	taker, err := store.Create(ctx, w.owner.ID, project.New{Name: "taker", Organisation: w.org()})
	if err != nil {
		t.Fatal(err)
	}
	w.verifiedDomain(taker.ID, r.domain)

	// The builder that held its build cannot bring it back: the lease is
	// gone, finishing records nothing, and no instance can be placed.
	builds := build.NewStore(w.pool)
	if err := builds.Renew(ctx, r.building.ID, builderID, time.Now().Add(time.Hour)); !errors.Is(err, build.ErrLeaseLost) {
		t.Fatalf("renew after delete: %v", err)
	}
	handedOn := false
	err = builds.Succeed(ctx, r.building, r.project.ID, build.Image{Repository: "r/shop", Tag: "v2", Digest: "sha256:" + fmt.Sprintf("%064d", 2), Size: 1},
		func(context.Context, pgx.Tx, db.Deployment, db.Image) error { handedOn = true; return nil })
	if err != nil || handedOn {
		t.Fatalf("succeed after delete: %v, handed on %v", err, handedOn)
	}
	if err := builds.Fail(ctx, r.building, build.StatusFailed, "late"); err != nil {
		t.Fatalf("fail after delete: %v", err)
	}
	if _, err := (instance.Store{DB: w.pool}).Create(ctx, w.node, instance.New{DeploymentID: r.active, Port: 8080, CPUMillis: 250, MemoryMB: 256}); !errors.Is(err, instance.ErrNotFound) {
		t.Fatalf("placing an instance of a deleted deployment: %v", err)
	}
	if n := w.count(`SELECT count(*) FROM deployments WHERE project_id = $1`, r.project.ID) + w.count(`SELECT count(*) FROM images WHERE project_id = $1`, r.project.ID); n != 0 {
		t.Fatalf("%d rows came back", n)
	}
	if _, err := store.Delete(ctx, w.owner.ID, r.project.ID); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestDeleteWaitsForABuildFinishing: a builder in the middle of recording
// its result holds the build's row; the delete waits for it and then
// removes what it wrote, image and deployment included.
func TestDeleteWaitsForABuildFinishing(t *testing.T) {
	w := newWorld(t)
	ctx := w.ctx
	r := w.running("shop")

	inside, release := make(chan struct{}), make(chan struct{})
	succeeded := make(chan error, 1)
	go func() {
		succeeded <- build.NewStore(w.pool).Succeed(ctx, r.building, r.project.ID,
			build.Image{Repository: "r/shop", Tag: "v2", Digest: "sha256:" + fmt.Sprintf("%064d", 2), Size: 1},
			func(context.Context, pgx.Tx, db.Deployment, db.Image) error {
				close(inside)
				<-release
				return nil
			})
	}()
	<-inside
	deleted := make(chan error, 1)
	go func() {
		_, err := project.Store{DB: w.pool}.Delete(ctx, w.owner.ID, r.project.ID)
		deleted <- err
	}()
	// The delete is waiting on a lock the builder holds.
	deadline := time.Now().Add(30 * time.Second)
	for w.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%ProjectLockBuilds%'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the delete never waited for the builder")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-succeeded; err != nil {
		t.Fatalf("succeed: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if n := w.count(`SELECT count(*) FROM images`) + w.count(`SELECT count(*) FROM deployments`) + w.count(`SELECT count(*) FROM projects`); n != 0 {
		t.Fatalf("%d rows of the project left", n)
	}
}

// TestDeleteRetriesADeadlockWithPlacement: placing an instance reserves
// its node before it references its deployment, the delete locks the
// deployments before it gives nodes back; when both meet, Postgres breaks
// the deadlock and the delete, if it was the victim, runs again. Either
// way nothing of the project is left and the node's capacity adds up.
func TestDeleteRetriesADeadlockWithPlacement(t *testing.T) {
	w := newWorld(t)
	ctx := w.ctx
	r := w.running("shop")

	// A placement half done: the node's capacity reserved.
	place, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer place.Rollback(ctx) //nolint:errcheck // committed or failed below
	// As instance.Store.Create reserves: the CPU request.
	if err := (node.Store{DB: place}).Allocate(ctx, w.node.ID, node.CPURequest(100), 64); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() {
		_, err := project.Store{DB: w.pool}.Delete(ctx, w.owner.ID, r.project.ID)
		deleted <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for w.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%NodeRelease%'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the delete never waited for the node")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The placement now references the deployment the delete has locked.
	var img uuid.UUID
	if err := w.pool.QueryRow(ctx, `SELECT image_id FROM deployments WHERE id = $1`, r.active).Scan(&img); err != nil {
		t.Fatal(err)
	}
	iid := id.New()
	_, err = db.New(place).InstanceCreate(ctx, db.InstanceCreateParams{
		ID: iid, DeploymentID: r.active, NodeID: w.node.ID, ImageID: img,
		Ipv6Address: ipam.InstanceAddr(w.node.Prefix, iid), Port: 8080, CpuMillis: 100, MemoryMb: 64,
	})
	if err == nil {
		err = place.Commit(ctx)
	}
	t.Logf("the placement: %v", err) // the deadlock's victim, or committed once the delete gave way
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if n := w.count(`SELECT count(*) FROM instances`) + w.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	if cpu, mem := w.free(); cpu != 4000 || mem != 4096 {
		t.Fatalf("free after: %d millis, %d MB, want all", cpu, mem)
	}
}
