package management_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

const secretValue = "s3cr3t-value-never-logged"

// nodeWorld is two nodes with one instance each, of two projects, each
// with a variable, and the operator's node routes holding the keys.
type nodeWorld struct {
	pool      *pgxpool.Pool
	srv       *httptest.Server
	logs      *bytes.Buffer
	ring      *secret.Ring
	nodes     [2]node.Node
	creds     [2]string
	instances [2]instance.Instance
	projects  [2]uuid.UUID
}

func newNodeWorld(t *testing.T) *nodeWorld {
	t.Helper()
	ctx := context.Background()
	w := &nodeWorld{pool: testdb.New(t), logs: &bytes.Buffer{}}
	w.ring, _ = secret.ParseRing(secret.NewKey("k1"))
	log := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.srv = httptest.NewServer((&management.API{Pool: w.pool, Secrets: w.ring, Token: token, Log: log}).Handler())
	t.Cleanup(w.srv.Close)
	for i := range 2 {
		n, err := node.Store{DB: w.pool}.Register(ctx, ipam.DefaultCluster, node.Registration{
			ID: id.New(), Hostname: "w", InternalAddress: "100.64.0." + string(rune('1'+i)) + ":7000", CPUMillis: 4000, MemoryMB: 8192,
		})
		if err != nil {
			t.Fatal(err)
		}
		w.nodes[i], w.creds[i] = n, node.NewCredential()
		if err := (node.Store{DB: w.pool}).SetCredential(ctx, n.ID, w.creds[i]); err != nil {
			t.Fatal(err)
		}
		proj, img, dep := testdb.Project(t, w.pool), id.New(), id.New()
		w.projects[i] = proj
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'v1', 'sha256:' || repeat('a', 64))`, []any{img, proj, "registry.test/" + proj.String()}},
			{`INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id) VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3)`, []any{dep, proj, img}},
		} {
			if _, err := w.pool.Exec(ctx, q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		ct, kid := w.ring.Seal([]byte(secretValue+string(rune('A'+i))), secret.EnvContext(proj, "DB_PASSWORD"))
		if _, err := db.New(w.pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: "DB_PASSWORD", ValueCiphertext: ct, KeyID: kid}); err != nil {
			t.Fatal(err)
		}
		if w.instances[i], err = (instance.Store{DB: w.pool}).Create(ctx, n, instance.New{DeploymentID: dep, Port: 8080, CPUMillis: 250, MemoryMB: 256}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *nodeWorld) env(t *testing.T, instanceID uuid.UUID, auth func(*http.Request)) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/v1/node/instances/"+instanceID.String()+"/environment", nil)
	auth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

// TestANodeGetsOnlyItsOwnInstancesEnvironment: the operator decrypts an
// instance's variables for the node it is placed on and for no other; a
// node without its own credential (the cluster token, another node's
// secret, none) gets nothing. Values never reach the logs.
func TestANodeGetsOnlyItsOwnInstancesEnvironment(t *testing.T) {
	w := newNodeWorld(t)
	a, b := w.nodes[0].ID.String(), w.nodes[1].ID.String()

	code, body := w.env(t, w.instances[0].ID, basic(a, w.creds[0]))
	var got management.InstanceEnvironment
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil || got.Environment["DB_PASSWORD"] != secretValue+"A" || len(got.Environment) != 1 {
		t.Fatalf("own instance: %d %s", code, body)
	}
	for _, c := range []struct {
		name     string
		instance uuid.UUID
		auth     func(*http.Request)
		want     int
	}{
		{"node A asks for node B's instance", w.instances[1].ID, basic(a, w.creds[0]), 404},
		{"node B asks for node A's instance", w.instances[0].ID, basic(b, w.creds[1]), 404},
		{"an instance that does not exist", id.New(), basic(a, w.creds[0]), 404},
		{"node A with node B's secret", w.instances[0].ID, basic(a, w.creds[1]), 401},
		{"node A with no secret", w.instances[0].ID, basic(a, ""), 401},
		{"a node that does not exist", w.instances[0].ID, basic(id.New().String(), w.creds[0]), 401},
		{"not a node id", w.instances[0].ID, basic("admin", w.creds[0]), 401},
		{"the management token", w.instances[0].ID, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, 401},
		{"no credential", w.instances[0].ID, func(*http.Request) {}, 401},
	} {
		code, body := w.env(t, c.instance, c.auth)
		if code != c.want || strings.Contains(body, secretValue) {
			t.Errorf("%s: %d %s, want %d without a value", c.name, code, body, c.want)
		}
		var e struct{ Error, Code string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%s: not a JSON error: %s", c.name, body)
		}
	}

	// A node restarted with a new credential: the old one stops working.
	fresh := node.NewCredential()
	if err := (node.Store{DB: w.pool}).SetCredential(context.Background(), w.nodes[0].ID, fresh); err != nil {
		t.Fatal(err)
	}
	if code, _ := w.env(t, w.instances[0].ID, basic(a, w.creds[0])); code != 401 {
		t.Fatalf("old credential after a new one was set: %d", code)
	}
	if code, _ := w.env(t, w.instances[0].ID, basic(a, fresh)); code != 200 {
		t.Fatalf("new credential: %d", code)
	}

	// A value that does not decrypt (sealed under a key the operator
	// lacks) is a 422 naming the variable, not its value.
	other, _ := secret.ParseRing(secret.NewKey("k9"))
	ct, kid := other.Seal([]byte(secretValue+"Z"), secret.EnvContext(w.projects[1], "API_KEY"))
	if _, err := db.New(w.pool).EnvironmentVariableUpsert(context.Background(), db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: w.projects[1], Name: "API_KEY", ValueCiphertext: ct, KeyID: kid}); err != nil {
		t.Fatal(err)
	}
	if code, body := w.env(t, w.instances[1].ID, basic(b, w.creds[1])); code != 422 || !strings.Contains(body, "API_KEY") || strings.Contains(body, secretValue) {
		t.Fatalf("undecryptable: %d %s", code, body)
	}
	if !strings.Contains(w.logs.String(), "API_KEY") {
		t.Fatalf("the refusal's cause is not logged: %s", w.logs.String())
	}
	if strings.Contains(w.logs.String(), secretValue) {
		t.Fatalf("a value reached the log: %s", w.logs.String())
	}
}

// TestNodeRoutesNeedTheirConcern: an operator without keys serves no
// environments, and one that is not the registry's token service hands
// out no registry credential.
func TestNodeRoutesNeedTheirConcern(t *testing.T) {
	w := newNodeWorld(t)
	srv := httptest.NewServer((&management.API{Pool: w.pool, Token: token, Log: slog.New(slog.DiscardHandler)}).Handler())
	defer srv.Close()
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/node/instances/" + w.instances[0].ID.String() + "/environment"},
		{"POST", "/v1/node/registry-credential"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		req.SetBasicAuth(w.nodes[0].ID.String(), w.creds[0])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s %s: %d, want 404", c.method, c.path, resp.StatusCode)
		}
	}
}
