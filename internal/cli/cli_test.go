package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func run(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, Env{Environ: environ, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func TestHelpListsEveryRole(t *testing.T) {
	code, out, _ := run(t, nil, "help")
	if code != ExitOK {
		t.Fatalf("help exited %d", code)
	}
	for _, role := range []string{"api", "operator", "nodeagent", "builder", "edge", "migrate", "dev", "bootstrap", "deploy"} {
		if !strings.Contains(out, "  "+role+" ") {
			t.Errorf("help does not list %s:\n%s", role, out)
		}
	}
	if code, _, errOut := run(t, nil, "frobnicate"); code != ExitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
}

func TestRoleWithoutDatabaseURLNamesIt(t *testing.T) {
	for _, role := range []string{"migrate", "api", "operator", "nodeagent", "edge"} {
		code, _, errOut := run(t, []string{"PATH=/usr/bin"}, role)
		if code != ExitUsage || !strings.Contains(errOut, "DATABASE_URL: required but not set") {
			t.Errorf("%s without DATABASE_URL: exit %d, stderr %q", role, code, errOut)
		}
	}
	code, _, errOut := run(t, []string{"DATABASE_URL=postgres://x@db/z", "BUILDKIT_ADDR="}, "builder")
	if code != ExitUsage || !strings.Contains(errOut, "BUILDKIT_ADDR") || !strings.Contains(errOut, "REGISTRY_ADDR") {
		t.Errorf("builder: exit %d, stderr %q", code, errOut)
	}
}

func TestMalformedVariableIsNamed(t *testing.T) {
	code, _, errOut := run(t, []string{"DATABASE_URL=postgres://u:p@h/d", "MIGRATE_TIMEOUT=forever"}, "migrate")
	if code != ExitUsage || !strings.Contains(errOut, "MIGRATE_TIMEOUT") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// Values that parse but cannot work are refused at start too, before a
// role connects anywhere.
func TestBadKeysStopTheRoleAtStart(t *testing.T) {
	for _, tc := range []struct {
		role string
		env  []string
		want string
	}{
		{"operator", []string{"SECRETS_KEYS=k1:dG9vIHNob3J0"}, "SECRETS_KEYS"},
		{"nodeagent", []string{"NODE_INTERNAL_ADDRESS=127.0.0.1:1", "OPERATOR_URL=ftp://dG9vIHNob3J0"}, "OPERATOR_URL"},
		{"operator", []string{"REGISTRY_TOKEN_KEY=dG9vIHNob3J0", "REGISTRY_CREDENTIAL_SECRET=s"}, "REGISTRY_TOKEN_KEY"},
		{"operator", []string{"REGISTRY_CREDENTIAL_SECRET=s"}, "REGISTRY_TOKEN_KEY"},
	} {
		env := append([]string{"DATABASE_URL=postgres://u:p@127.0.0.1:1/d", "CLUSTER_TOKEN=t", "NODE_PROXY_TOKEN=p", "MANAGEMENT_TOKEN=m"}, tc.env...)
		code, _, errOut := run(t, env, tc.role)
		if code != ExitUsage || !strings.Contains(errOut, tc.want+": ") || strings.Contains(errOut, "dG9vIHNob3J0") {
			t.Errorf("%s %v: exit %d, stderr %q", tc.role, tc.env, code, errOut)
		}
	}
}

func TestBootstrapWithoutItsFileIsAUsageError(t *testing.T) {
	t.Chdir(t.TempDir())
	code, out, errOut := run(t, nil, "bootstrap")
	if code != ExitUsage || !strings.Contains(errOut, "cluster.yaml") || out != "" {
		t.Fatalf("bootstrap: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// The api role runs once its configuration is valid: an address it cannot
// listen on is then its first failure, and it names the variable.
func TestAPIRoleRuns(t *testing.T) {
	code, out, errOut := run(t, []string{"DATABASE_URL=postgres://u:p@127.0.0.1:1/d", "CLUSTER_TOKEN=t", "API_ADDR=256.0.0.1:0"}, "api")
	if code != ExitFailure || !strings.Contains(errOut, "API_ADDR 256.0.0.1:0") || out != "" {
		t.Fatalf("api: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMigrateUnreachableDatabase(t *testing.T) {
	addr := testenv.RefusedAddr(t)

	code, out, errOut := run(t, []string{"DATABASE_URL=postgres://zeitwork:hunter2@" + addr + "/zeitwork", "MIGRATE_TIMEOUT=5s"}, "migrate")
	if code != ExitFailure || !strings.Contains(errOut, "cannot reach the database at postgres://zeitwork:xxxxx@"+addr) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(errOut, "hunter2") {
		t.Fatalf("password in error output: %q", errOut)
	}
}

func TestMigrateAppliesThenIsNoOp(t *testing.T) {
	url := testdb.Empty(t)
	env := []string{"DATABASE_URL=" + url, "LOG_FORMAT=text"}
	code, out, errOut := run(t, env, "migrate")
	if code != ExitOK || !strings.Contains(out, "applied ") || !strings.Contains(out, "0000_init") {
		t.Fatalf("first migrate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run(t, env, "migrate")
	if code != ExitOK || !strings.HasPrefix(out, "database is up to date") {
		t.Fatalf("second migrate: exit %d, stdout %q", code, out)
	}

	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM drizzle.__drizzle_migrations").Scan(&n); err != nil || n < 2 {
		t.Fatalf("journal rows = %d, %v", n, err)
	}
}

func TestMigrateForeignSchemaExitsAndChangesNothing(t *testing.T) {
	url := testdb.Empty(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE projects (name text)"); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, []string{"DATABASE_URL=" + url}, "migrate")
	if code != ExitFailure || !strings.Contains(errOut, "public.projects") || !strings.Contains(errOut, "refusing to migrate") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 1 {
		t.Fatalf("%d tables after a refused migrate, want only the foreign one", tables)
	}
}

func TestDevCheckVerifiesStackAndMigrates(t *testing.T) {
	url := testdb.Empty(t)
	// Every dependency must be there for dev to proceed; ask testenv first
	// so a missing one is reported (or fails under CI) by name.
	testenv.Registry(t)
	testenv.S3(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)

	code, out, errOut := run(t, append(os.Environ(), "DATABASE_URL="+url), "dev", "--check")
	if code != ExitOK {
		t.Fatalf("dev --check: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"dependencies healthy, database migrated", "postgres", "minio", "registry", "buildkitd", "containerd", "Roles not started (--check)."} {
		if !strings.Contains(out, want) {
			t.Errorf("dev output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "zeitwork@") && !strings.Contains(out, "xxxxx@") {
		t.Errorf("dev printed a database password:\n%s", out)
	}
}

func TestDevReportsDependencyThatIsDown(t *testing.T) {
	deadAddr := testenv.RefusedAddr(t)
	code, _, errOut := run(t, []string{"REGISTRY_ADDR=" + deadAddr, "DATABASE_URL=postgres://u:p@" + deadAddr + "/x"}, "dev", "--check")
	if code != ExitFailure || !strings.Contains(errOut, "registry at "+deadAddr) || !strings.Contains(errOut, "scripts/deps.sh up") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestDevRunsTheBuilderAndSimulatedNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)
	url := testdb.Empty(t)
	state := t.TempDir()
	prefix := testenv.DevPrefix(t, "zwt-dev", 2)
	base := testenv.DevPortBase(t, 210)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errOut testenv.Buffer
	go func() {
		done <- Main(ctx, []string{"dev", "--bare"}, Env{Environ: append(os.Environ(),
			"DATABASE_URL="+url, "DEV_STATE_DIR="+state, "DEV_NODES=2", "DEV_PREFIX="+prefix,
			fmt.Sprintf("DEV_PORT_BASE=%d", base), "LOG_LEVEL=warn"), Stdout: &out, Stderr: &errOut})
	}()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != ExitOK {
				t.Errorf("dev exited %d after Ctrl-C:\n%s", code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop")
		}
	}()

	pool := testdb.Pool(t, url)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var nodes int
		pool.QueryRow(context.Background(), "SELECT count(*) FROM nodes WHERE status = 'active'").Scan(&nodes)
		if nodes == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d simulated nodes registered, want 2\n%s\n%s", nodes, out.String(), errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	secrets, err := os.ReadFile(filepath.Join(state, "secrets.env"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimPrefix(strings.Split(string(secrets), "\n")[0], "CLUSTER_TOKEN=")
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/health", base+2), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 2's API never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "builder     working build tasks") || !strings.Contains(out.String(), "node2") {
		t.Fatalf("dev output:\n%s", out.String())
	}

	// Every role connects as its own database user, and the nodes
	// registered as theirs.
	want := []string{prefix + "_builder", prefix + "_edge", prefix + "_nodeagent", prefix + "_operator"}
	for {
		rows, _ := pool.Query(context.Background(), `SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database() AND usename LIKE $1 || '\_%' ORDER BY 1`, prefix)
		users, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		if slices.Equal(users, want) || slices.Equal(users, append([]string{prefix + "_api"}, want...)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("roles connected as %v, want %v", users, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The node-proxy token (the edge's) does not open the management API.
	var proxyToken, managementToken string
	for _, line := range strings.Split(string(secrets), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "NODE_PROXY_TOKEN":
			proxyToken = v
		case "MANAGEMENT_TOKEN":
			managementToken = v
		}
	}
	for token, want := range map[string]int{proxyToken: 401, token: 401, managementToken: 200} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/images", base-19), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("management API with a token of secrets.env: %d, want %d", resp.StatusCode, want)
		}
	}
}
