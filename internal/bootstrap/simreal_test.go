package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// SimulatedClusterEnv turns on TestRealRunOnSimulatedMachines: it takes
// minutes and downloads the workers' packages from the Debian archive.
const SimulatedClusterEnv = "ZEITWORK_TEST_SIMULATED_CLUSTER"

// TestRealRunOnSimulatedMachines runs bootstrap for real, with this
// tree's zeitwork binary, on eight simulated machines that reach the
// Debian archive and this host's Postgres (exposed on their bridge) and
// whose workers can run containers. It proves as far as bootstrap is
// built: migrations; the operators and the API started (systemd units
// active); on the workers containerd, runc and nftables installed with apt
// and the node agent started, registered with a /64 each; and a second run
// changes none of that. It stops, as bootstrap does today, where the
// builder needs BuildKit installed (not built yet).
func TestRealRunOnSimulatedMachines(t *testing.T) {
	if os.Getenv(SimulatedClusterEnv) != "1" {
		t.Skipf("set %s=1 to run bootstrap on simulated machines (minutes, needs the Debian archive)", SimulatedClusterEnv)
	}
	names := []string{"op-1", "op-2", "op-3", "wk-1", "wk-2", "wk-3", "build-1", "edge-1"}
	sim := simmachine.StartWith(t, len(names), simmachine.Options{Internet: true, Containers: true})
	dir := t.TempDir()
	bin := filepath.Join(dir, "zeitwork-linux-amd64")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/zeitwork")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(file, clusterFile(t, sim, names), 0o600); err != nil {
		t.Fatal(err)
	}
	// The machines reach this host's Postgres through the bridge; so does
	// bootstrap, with the same URL the nodes get.
	dbURL := testdb.Empty(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = sim.Expose(t, u.Host)
	env := config.Environ(append(os.Environ(),
		"DATABASE_URL="+u.String(),
		"CLOUDFLARE_API_TOKEN=cf",
		"CLUSTER_TOKEN=token",
		"SECRETS_KEYS=k1:"+strings.Repeat("A", 43)+"=",
		"CERTIFICATE_KEYS=c1:"+strings.Repeat("B", 43)+"=",
		"DATABASE_ROLE_PASSWORD_KEY=role-password-key",
		"NODE_PROXY_TOKEN=proxy-token",
		"MANAGEMENT_TOKEN=management-token",
		"S3_SECRET_ACCESS_KEY=s3",
	))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	run := func() string {
		t.Helper()
		c, err := bootstrap.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		b := &bootstrap.Bootstrap{Cluster: c, Env: env, Out: &out, Wait: 2 * time.Minute}
		start := time.Now()
		_, err = b.Run(ctx)
		t.Logf("bootstrap in %v:\n%s", time.Since(start).Round(time.Second), out.String())
		if !errors.Is(err, bootstrap.ErrNotBuilt) || !strings.Contains(err.Error(), "build-1: buildkitd") {
			t.Fatalf("bootstrap: %v; want it to stop at build-1's buildkitd (not built yet)", err)
		}
		return out.String()
	}
	out := run()
	for _, want := range []string{
		"[applied] database: migrations: up to date",
		"[applied] op-1: start zeitwork-operator.service zeitwork-api.service: running",
		"[applied] op-3: start zeitwork-operator.service: running",
		"[applied] wk-1: packages: ",
		"[applied] wk-3: start containerd.service zeitwork-nodeagent.service: running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run lacks %q", want)
		}
	}

	// The units run on the machines, and the workers registered.
	units := map[string]string{"op-1": "zeitwork-operator zeitwork-api", "op-2": "zeitwork-operator zeitwork-api", "op-3": "zeitwork-operator",
		"wk-1": "containerd zeitwork-nodeagent", "wk-2": "containerd zeitwork-nodeagent", "wk-3": "containerd zeitwork-nodeagent"}
	for i, name := range names {
		if units[name] == "" {
			continue
		}
		cl, err := sim.Machines[i].Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := cl.Run(ctx, "systemctl is-active "+units[name], nil)
		cl.Close()
		if strings.Count(string(got), "active\n") != len(strings.Fields(units[name])) || strings.Contains(string(got), "inactive") {
			t.Errorf("%s: %s are %q", name, units[name], got)
		}
	}
	pool := testdb.Pool(t, dbURL)
	recorded := func() []string {
		t.Helper()
		rows, err := pool.Query(ctx, "SELECT internal_address, ipv6_prefix::text, id::text FROM nodes")
		if err != nil {
			t.Fatal(err)
		}
		var nodes []string
		for rows.Next() {
			var addr, prefix, id string
			if err := rows.Scan(&addr, &prefix, &id); err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, addr+" "+prefix+" "+id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(nodes)
		return nodes
	}
	nodes := recorded()
	t.Logf("nodes: %v", nodes)
	if len(nodes) != 3 {
		t.Errorf("%d nodes registered, want the 3 workers: %v", len(nodes), nodes)
	}
	for _, i := range []int{3, 4, 5} {
		found := false
		for _, n := range nodes {
			found = found || strings.HasPrefix(n, sim.Machines[i].Addr+":")
		}
		if !found {
			t.Errorf("%s (%s) is not a registered node: %v", names[i], sim.Machines[i].Addr, nodes)
		}
	}

	// Again: everything before the builder is done, nothing applied.
	again := run()
	for _, line := range strings.Split(again, "\n") {
		if strings.Contains(line, "[apply]") && !strings.Contains(line, "build-1") {
			t.Errorf("the second run changed something: %s", line)
		}
	}
	if !strings.Contains(again, "[done] wk-3: start containerd.service zeitwork-nodeagent.service") {
		t.Errorf("second run does not find wk-3 done")
	}

	// wk-2 is reinstalled: its disk is bare and its host key new. Once its
	// old pin is deleted (what bootstrap's refusal tells a person to do),
	// bootstrap installs it again and it comes back as the node it was.
	wk2 := sim.Machines[4]
	wk2.Reinstall(t)
	knownHosts := filepath.Join(dir, "cluster.known_hosts")
	raw, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if !strings.HasPrefix(line, wk2.Addr+" ") {
			keep = append(keep, line)
		}
	}
	if err := os.WriteFile(knownHosts, []byte(strings.Join(keep, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	recovered := run()
	for _, want := range []string{"[applied] wk-2: packages: ", "[applied] wk-2: start containerd.service zeitwork-nodeagent.service: running"} {
		if !strings.Contains(recovered, want) {
			t.Errorf("recovery run lacks %q", want)
		}
	}
	// The agent came back as the recorded node: same id and prefix,
	// nothing added.
	if after := recorded(); strings.Join(after, ",") != strings.Join(nodes, ",") {
		t.Errorf("nodes after recovering wk-2:\n%v\nwant\n%v", after, nodes)
	}
}
