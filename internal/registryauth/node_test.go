package registryauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// placed registers a node with an instance of a new project on it and
// returns both.
func placed(t *testing.T, pool *pgxpool.Pool, addr string) (node.Node, uuid.UUID, instance.Instance) {
	t.Helper()
	ctx := context.Background()
	n, err := node.Store{DB: pool}.Register(ctx, ipam.DefaultCluster, node.Registration{ID: id.New(), Hostname: "w", InternalAddress: addr, CPUMillis: 4000, MemoryMB: 8192})
	if err != nil {
		t.Fatal(err)
	}
	proj, img, dep := testdb.Project(t, pool), id.New(), id.New()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'v1', 'sha256:' || repeat('a', 64))`, []any{img, proj, "registry.test/" + proj.String()}},
		{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, []any{dep, proj, img}},
	} {
		if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	in, err := instance.Store{DB: pool}.Create(ctx, n, instance.New{DeploymentID: dep, Port: 8080, CPUMillis: 250, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	return n, proj, in
}

// TestNodeCredentialsPullOnlyWhatRunsThere runs the real registry with
// token auth: a node's registry credential, handed out by the operator's
// node route against the node's own credential, pulls the images of the
// projects placed on that node and nothing else, and loses a project as
// soon as its instances there are stopped.
func TestNodeCredentialsPullOnlyWhatRunsThere(t *testing.T) {
	svc := newService(t)
	pool := testdb.New(t)
	svc.NodeProjects = node.Store{DB: pool}.Projects
	addr := tokenRegistry(t, svc)
	nodeA, projA, instA := placed(t, pool, "100.64.0.1:7000")
	_, projB, _ := placed(t, pool, "100.64.0.2:7000")
	admin := svc.Mint(registryauth.Admin, time.Hour)
	for _, p := range []uuid.UUID{projA, projB} {
		if err := push(addr, p.String(), registryauth.Admin, admin); err != nil {
			t.Fatal(err)
		}
	}

	// Node A asks the operator for its registry credential.
	mgmt := httptest.NewServer((&management.API{Pool: pool, RegistryTokens: svc, Token: "mgmt", Log: zlog.Discard()}).Handler())
	defer mgmt.Close()
	secretA := node.NewCredential()
	if err := (node.Store{DB: pool}).SetCredential(context.Background(), nodeA.ID, secretA); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", mgmt.URL+"/v1/node/registry-credential", nil)
	req.SetBasicAuth(nodeA.ID.String(), secretA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var cred management.RegistryCredential
	json.NewDecoder(resp.Body).Decode(&cred)
	resp.Body.Close()
	if resp.StatusCode != 200 || cred.Username != registryauth.NodePrincipal(nodeA.ID) || cred.Password == "" {
		t.Fatalf("registry credential: %d %+v", resp.StatusCode, cred.Username)
	}
	req, _ = http.NewRequest("POST", mgmt.URL+"/v1/node/registry-credential", nil)
	req.SetBasicAuth(nodeA.ID.String(), "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("registry credential with a wrong node secret: %v %v", resp.StatusCode, err)
	}

	if err := pull(addr, projA.String(), cred.Username, cred.Password); err != nil {
		t.Fatalf("node A cannot pull the project it runs: %v", err)
	}
	if err := pull(addr, projB.String(), cred.Username, cred.Password); !denied(err) {
		t.Fatalf("node A pulled a project placed on node B only: %v", err)
	}
	if err := push(addr, projA.String(), cred.Username, cred.Password); !denied(err) {
		t.Fatalf("node A pushed: %v", err)
	}
	// Another node's name with node A's password does not pass.
	if err := pull(addr, projA.String(), registryauth.NodePrincipal(id.New()), cred.Password); !denied(err) {
		t.Fatalf("another node's name with A's password: %v", err)
	}
	// The project leaves node A: its credential no longer pulls it.
	if _, err := pool.Exec(context.Background(), `UPDATE instances SET desired_state = 'stopped' WHERE id = $1`, instA.ID); err != nil {
		t.Fatal(err)
	}
	if err := pull(addr, projA.String(), cred.Username, cred.Password); !denied(err) {
		t.Fatalf("node A pulled a project no longer placed on it: %v", err)
	}
}
