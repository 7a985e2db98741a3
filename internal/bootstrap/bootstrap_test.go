package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// testCluster is the example file with a release binary of its own, and
// the environment it names.
func testCluster(t *testing.T) (*Cluster, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), example(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zeitwork-linux-amd64"), []byte("zeitwork v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Load(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Database users are global to the Postgres cluster: this test's own,
	// dropped when it ends (and named so that testdb drops them if not).
	c.Postgres.RoleUsers.Prefix = fmt.Sprintf("zw_test_%d_%06x", time.Now().Unix(), rand.IntN(1<<24))
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), testenv.Endpoints(t).Database.URL.Reveal())
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		for _, r := range dbRoles {
			conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{c.Postgres.RoleUsers.Prefix + "_" + string(r.group)}.Sanitize()) //nolint:errcheck // best effort
		}
	})
	env := map[string]string{
		"DATABASE_URL":               testdb.Empty(t),
		"CLOUDFLARE_API_TOKEN":       "cf",
		"CLUSTER_TOKEN":              "token",
		"NODE_PROXY_TOKEN":           "proxy-token",
		"MANAGEMENT_TOKEN":           "management-token",
		"DATABASE_ROLE_PASSWORD_KEY": "role-password-key",
		"SECRETS_KEYS":               fakeValues.SecretsKeys,
		"CERTIFICATE_KEYS":           fakeValues.CertificateKeys,
		"S3_SECRET_ACCESS_KEY":       "s3",
	}
	return c, env
}

// machines are the cluster's fake hosts by name; new ones replace wiped
// machines.
type machines map[string]*fakeHost

func (m machines) dial(t *testing.T, c *Cluster, url string) func(context.Context, Node) (Host, error) {
	pool := testdb.Pool(t, url)
	return func(_ context.Context, n Node) (Host, error) {
		if m[n.Name] == nil {
			m[n.Name] = newFakeHost(t, c, n, pool)
		}
		return m[n.Name], nil
	}
}

func run(t *testing.T, c *Cluster, env map[string]string, m machines, dry bool) (Result, string, error) {
	t.Helper()
	var out bytes.Buffer
	b := &Bootstrap{Cluster: c, Env: env, Out: &out, DryRun: dry, Dial: m.dial(t, c, env["DATABASE_URL"]), Wait: time.Minute, Poll: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := b.Run(ctx)
	return res, out.String(), err
}

func nodes(t *testing.T, url string) []node.Node {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ns, err := node.Store{DB: pool}.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestBootstrapFromNothingAndAgainChangesNothing(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}

	res, out, err := run(t, c, env, m, true)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	for _, want := range []string{"[todo] database: migrations: ", "[todo] database: role users ", "[todo] wk-1: zeitwork binary /usr/local/bin/zeitwork: to write", "[todo] cluster: workers and operators registered", "dry run: "} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	for name, h := range m {
		if h.writes > 0 || h.restarts > 0 {
			t.Errorf("the dry run changed %s", name)
		}
	}
	if res.Applied != 0 || res.Todo == 0 {
		t.Errorf("dry run result %+v", res)
	}

	res, out, err = run(t, c, env, m, false)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	if res.Applied == 0 || !strings.Contains(out, "[applied] wk-3: start containerd.service zeitwork-nodeagent.service") ||
		!strings.Contains(out, "point edge.zeitwork.com and *.zeitwork.app at the edges (203.0.113.41)") {
		t.Fatalf("first run: %+v\n%s", res, out)
	}
	for name, h := range m {
		for p, mode := range h.modes {
			if strings.HasSuffix(p, ".env") && mode != 0o600 {
				t.Errorf("%s %s written %v", name, p, mode)
			}
		}
		if h.restarts != 1 {
			t.Errorf("%s restarted %d times", name, h.restarts)
		}
	}
	if ns := nodes(t, env["DATABASE_URL"]); len(ns) != 3 {
		t.Fatalf("%d nodes registered, want 3", len(ns))
	}
	// Each role got its own database user and only its own API's token: a
	// worker's credentials read no accounts and open no management API.
	worker := readEnvFile(t, m["wk-1"].files["/etc/zeitwork/nodeagent.env"])
	conn, err := pgx.Connect(context.Background(), worker["DATABASE_URL"])
	if err != nil {
		t.Fatalf("the worker's database user: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM nodes").Scan(&n); err != nil || n != 3 {
		t.Errorf("the worker's user reads %d nodes: %v", n, err)
	}
	if _, err := conn.Exec(context.Background(), "SELECT id FROM users"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the worker's user reads users: %v", err)
	}
	edge := readEnvFile(t, m["edge-1"].files["/etc/zeitwork/edge.env"])
	operator := readEnvFile(t, m["op-1"].files["/etc/zeitwork/operator.env"])
	if worker["NODE_PROXY_TOKEN"] != "proxy-token" || worker["CLUSTER_TOKEN"] != "token" || worker["MANAGEMENT_TOKEN"] != "" ||
		edge["NODE_PROXY_TOKEN"] != "proxy-token" || edge["CLUSTER_TOKEN"] != "" || edge["MANAGEMENT_TOKEN"] != "" ||
		operator["MANAGEMENT_TOKEN"] != "management-token" || operator["CLUSTER_TOKEN"] != "" || operator["NODE_PROXY_TOKEN"] != "" {
		t.Errorf("tokens: worker %v, edge %v, operator %v", worker, edge, operator)
	}
	if worker["DATABASE_URL"] == edge["DATABASE_URL"] || worker["DATABASE_URL"] == env["DATABASE_URL"] {
		t.Errorf("the worker connects as %s", worker["DATABASE_URL"])
	}

	writes := map[string]int{}
	for name, h := range m {
		writes[name] = h.writes
	}
	res, out, err = run(t, c, env, m, false)
	if err != nil || res.Applied != 0 || !strings.Contains(out, "nothing changed: all") {
		t.Fatalf("second run: %v %+v\n%s", err, res, out)
	}
	for name, h := range m {
		if h.writes != writes[name] || h.restarts != 1 {
			t.Errorf("the second run touched %s", name)
		}
	}
	if _, out, _ := run(t, c, env, m, true); !strings.Contains(out, "nothing to change: all") {
		t.Errorf("dry run after: %s", out)
	}
}

func TestAKilledRunResumesAndANewBinaryRestarts(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	// The connection to wk-2 drops while its configuration is written.
	dial := m.dial(t, c, env["DATABASE_URL"])
	for _, n := range c.Nodes {
		dial(context.Background(), n) //nolint:errcheck // fake
	}
	m["wk-2"].failWrite = "/etc/zeitwork/nodeagent.env"
	_, out, err := run(t, c, env, m, false)
	if err == nil || !strings.Contains(out, "[failed] wk-2: configuration") {
		t.Fatalf("interrupted run: %v\n%s", err, out)
	}
	if m["wk-3"].writes != 0 {
		t.Errorf("the run went on past the failure")
	}
	res, out, err := run(t, c, env, m, false)
	if err != nil || !strings.Contains(out, "[done] wk-1: start") || !strings.Contains(out, "[applied] wk-2: configuration") {
		t.Fatalf("resumed run: %v %+v\n%s", err, res, out)
	}

	// A newer binary: every node gets it and restarts its units.
	if err := os.WriteFile(c.Path(c.Release.Binary), []byte("zeitwork v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, out, err = run(t, c, env, m, false)
	if err != nil || res.Applied != 2*len(c.Nodes) {
		t.Fatalf("upgrade: %v, %d applied (want a binary and a restart per node)\n%s", err, res.Applied, out)
	}
	if !strings.Contains(out, "[applied] op-1: start zeitwork-operator.service zeitwork-api.socket zeitwork-api.service") {
		t.Errorf("upgrade did not restart op-1:\n%s", out)
	}
	for name, h := range m {
		if h.restarts != 2 {
			t.Errorf("%s restarted %d times, want 2", name, h.restarts)
		}
	}
}

func TestWipedMachinesComeBackWithTheirRecordedIdentity(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	if _, out, err := run(t, c, env, m, false); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	before := map[string]node.Node{}
	for _, n := range nodes(t, env["DATABASE_URL"]) {
		before[n.InternalAddress] = n
	}

	// Every machine is replaced by a fresh one at the same address: the
	// cluster comes back from its database alone.
	clear(m)
	_, out, err := run(t, c, env, m, true)
	if err != nil {
		t.Fatal(err)
	}
	wk1 := before["10.0.0.21:8090"]
	if !strings.Contains(out, "wk-1 (10.0.0.21) is recorded node "+wk1.ID.String()+", prefix "+wk1.Prefix.String()) ||
		!strings.Contains(out, "[todo] wk-1: node identity "+wk1.ID.String()) {
		t.Fatalf("the plan does not recover wk-1:\n%s", out)
	}
	if _, out, err := run(t, c, env, m, false); err != nil {
		t.Fatalf("recovery run: %v\n%s", err, out)
	}
	after := nodes(t, env["DATABASE_URL"])
	if len(after) != len(before) {
		t.Fatalf("%d nodes after recovery, %d before", len(after), len(before))
	}
	for _, n := range after {
		was := before[n.InternalAddress]
		if n.ID != was.ID || n.Prefix != was.Prefix {
			t.Errorf("%s came back as %s %s, was %s %s", n.InternalAddress, n.ID, n.Prefix, was.ID, was.Prefix)
		}
		got := strings.TrimSpace(string(m[n.Hostname].files[filepath.Join(NodeStateDir, NodeIDFile)]))
		if u, err := uuid.Parse(got); err != nil || u != was.ID {
			t.Errorf("%s's state holds %q", n.Hostname, got)
		}
	}
}

func TestPreflightStopsBeforeAnythingChanges(t *testing.T) {
	c, env := testCluster(t)
	delete(env, "CLUSTER_TOKEN")
	env["SECRETS_KEYS"] = "k1:short"
	m := machines{}
	_, out, err := run(t, c, env, m, false)
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("run = %v", err)
	}
	for _, want := range []string{"$CLUSTER_TOKEN (secrets.cluster_token_env) is not set", "$SECRETS_KEYS: key \"k1\": want 32 bytes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "k1:short") {
		t.Errorf("a secret was printed:\n%s", out)
	}
	for name, h := range m {
		if h.writes > 0 {
			t.Errorf("%s was changed", name)
		}
	}
}

func TestAnUnreachableDatabaseIsAPreflightFailure(t *testing.T) {
	c, env := testCluster(t)
	env["DATABASE_URL"] = "postgres://nobody:hunter2pw@127.0.0.1:1/zeitwork?connect_timeout=5"
	var out bytes.Buffer
	b := &Bootstrap{Cluster: c, Env: env, Out: &out, Dial: func(context.Context, Node) (Host, error) { return nil, errors.New("no route to host") }}
	_, err := b.Run(context.Background())
	if !errors.Is(err, ErrPreflight) || !strings.Contains(out.String(), "[failed] database: cannot reach the database") ||
		!strings.Contains(out.String(), "[failed] wk-1: ssh root@203.0.113.21: no route to host") {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "hunter2pw") {
		t.Errorf("the password was printed:\n%s", out.String())
	}
}

func TestRunnerCountsAndConfirms(t *testing.T) {
	var out bytes.Buffer
	done := false
	steps := []Step{
		{Name: "a", Check: func(context.Context) (Status, error) { return Status{Done: true}, nil }},
		{Name: "b", Check: func(context.Context) (Status, error) { return Status{Done: done, Detail: "b"}, nil },
			Apply: func(context.Context) error { done = true; return nil }},
		{Name: "c", Check: func(context.Context) (Status, error) { return Status{}, errors.New("cannot tell") }},
	}
	res, err := Runner{Out: &out, DryRun: true}.Run(context.Background(), steps)
	if err != nil || res.Todo != 1 || res.Done != 1 || res.Unknown != 1 || done {
		t.Fatalf("dry run %+v %v", res, err)
	}
	_, err = Runner{Out: &out}.Run(context.Background(), steps)
	if err == nil || !strings.Contains(err.Error(), "c: cannot tell") || !done {
		t.Fatalf("run: %v", err)
	}
	// An Apply whose effect its Check does not see is a failure.
	liar := []Step{{Name: "liar", Check: func(context.Context) (Status, error) { return Status{Detail: "still not"}, nil },
		Apply: func(context.Context) error { return nil }}}
	if _, err := (Runner{Out: &out}).Run(context.Background(), liar); err == nil || !strings.Contains(err.Error(), "still not") {
		t.Fatalf("liar: %v", err)
	}
	notBuilt := []Step{{Name: "nb", Check: func(context.Context) (Status, error) { return Status{}, nil },
		Apply: func(context.Context) error { return ErrNotBuilt }}}
	if _, err := (Runner{Out: &out}).Run(context.Background(), notBuilt); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("not built: %v", err)
	}
}

func TestMissingCertificates(t *testing.T) {
	const pebble = "https://10.0.0.1:14000/dir"
	keys := []string{"certificates/10.0.0.1-14000-dir/wildcard_.a.com/wildcard_.a.com.crt", "certificates/10.0.0.1-14000-dir/a.com/a.com.crt",
		"certificates/10.0.0.1-14000-dir/b.com/b.com.key", "certificates/acme-v02.api.letsencrypt.org-directory/b.com/b.com.crt"}
	if got := strings.Join(missingCertificates(pebble, []string{"a.com", "b.com"}, keys), " "); got != "*.b.com b.com" {
		t.Errorf("from %s: missing %q", pebble, got)
	}
	// Another ACME server's certificates are not this one's.
	if got := strings.Join(missingCertificates("https://acme-v02.api.letsencrypt.org/directory", []string{"a.com", "b.com"}, keys), " "); got != "*.a.com a.com *.b.com" {
		t.Errorf("from Let's Encrypt: missing %q", got)
	}
}

func TestRecordedSecretsKeysMustBeInTheRing(t *testing.T) {
	c, env := testCluster(t)
	env["DATABASE_URL"] = testdb.NewURL(t)
	pool := testdb.Pool(t, env["DATABASE_URL"])
	project := testdb.Project(t, pool)
	if _, err := pool.Exec(context.Background(),
		`INSERT INTO environment_variables (id, project_id, name, value_ciphertext, key_id) VALUES (gen_random_uuid(), $1, 'A', '\x00', 'k0')`, project); err != nil {
		t.Fatal(err)
	}
	_, out, err := run(t, c, env, machines{}, true)
	if !errors.Is(err, ErrPreflight) || !strings.Contains(out, "[failed] secrets keys: recorded values are encrypted under k0, which $SECRETS_KEYS lacks") {
		t.Fatalf("%v\n%s", err, out)
	}
	env["SECRETS_KEYS"] += ",k0:" + strings.Split(fakeValues.SecretsKeys, ":")[1]
	if _, out, err := run(t, c, env, machines{}, true); err != nil || !strings.Contains(out, "[ok] secrets keys: the ring holds all 1 recorded key ids; new values use k1") {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestARunStopsAtAMissingStepNamingTheField(t *testing.T) {
	c, env := testCluster(t)
	m := machines{}
	dial := m.dial(t, c, env["DATABASE_URL"])
	for _, n := range c.Nodes {
		dial(context.Background(), n) //nolint:errcheck // fake
	}
	delete(m["wk-1"].files, "/opt/kata/bin/containerd-shim-kata-v2")
	_, out, err := run(t, c, env, m, false)
	if !errors.Is(err, ErrMissing) || !errors.Is(err, ErrNotBuilt) || !strings.Contains(out, "[failed] wk-1: Kata Containers: missing: release.kata is not set") {
		t.Fatalf("%v\n%s", err, out)
	}
	if !m["op-3"].active["zeitwork-operator.service"] || m["wk-1"].restarts != 0 {
		t.Errorf("the steps before were not done, or the ones after were")
	}
}
