package bootstrap_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// SimulatedClusterEnv turns on TestRealRunOnSimulatedMachines outside CI:
// it takes minutes (and without scripts/sim-rootfs.sh's packages cache,
// the Debian archive).
const SimulatedClusterEnv = "ZEITWORK_TEST_SIMULATED_CLUSTER"

// simDomains are the platform's domains on the simulated cluster: the
// example's, each a zone of the Cloudflare emulator.
var simDomains = []string{"zeitwork.com", "zeitwork.app", "zeitwork-dns.com"}

// TestRealRunOnSimulatedMachines proves issue 14's "done when" on eight
// simulated machines (three operators, three workers, a builder, an edge),
// with this tree's zeitwork binary and this host standing in for the
// internet: Postgres, a registry, Cloudflare (the emulator, publishing into
// a DNS server) and an ACME CA (Pebble, given to the edge by cluster.yaml's
// platform.acme_* fields), each exposed on the machines' bridge.
//
//  1. bootstrap from nothing: every unit active, the workers registered
//     with a /64 each, the edge serving the platform certificates Pebble
//     issued by DNS-01 through the emulator;
//  2. an app deployed (three instances, one per worker) answers 200
//     through the edge over TLS;
//  3. bootstrap again: nothing changed;
//     3b. bootstrap with a newer binary (another version): every node
//     restarted onto it one at a time, the workers drained and undrained
//     in turn, the api and builder answering before the next node, while
//     clients loop through the edge and none fails (but during the edge's
//     own restart);
//  4. a worker wiped: bootstrap brings it back as the node it was (id and
//     /64), the deployment is whole again, and the app answers;
//  5. fresh machines at the same addresses, the same database: bootstrap
//     restores the recorded cluster (same nodes, the certificates not issued again,
//     nothing duplicated) and the app answers again.
func TestRealRunOnSimulatedMachines(t *testing.T) {
	// Five minutes of eight machines: CI runs it (CI=true), a laptop when
	// asked to.
	if os.Getenv(SimulatedClusterEnv) != "1" && !testenv.InCI() {
		t.Skipf("set %s=1 (or CI=true) to run bootstrap on simulated machines (about 5 minutes, as root)", SimulatedClusterEnv)
	}
	names := []string{"op-1", "op-2", "op-3", "wk-1", "wk-2", "wk-3", "build-1", "edge-1"}
	var timings []string
	phase := func(what string, start time.Time) {
		d := time.Since(start).Round(time.Second)
		timings = append(timings, fmt.Sprintf("%s: %v", what, d))
		t.Logf("phase %s took %v", what, d)
	}
	t.Cleanup(func() { t.Logf("phases:\n  %s", strings.Join(timings, "\n  ")) })

	start := time.Now()
	// With the packages cache the machines reach nothing beyond this host.
	debs := simDebs(t)
	sim := simmachine.StartWith(t, len(names), simmachine.Options{Internet: debs == "", Containers: true})
	machine := map[string]*simmachine.Machine{}
	for i, n := range names {
		machine[n] = sim.Machines[i]
	}
	host := startSimHost(t, sim, simDomains, debs)
	// The object store: a bucket of the test's own on this host's MinIO,
	// where the CLI uploads and the builder reads the sources.
	_, s3 := testenv.Bucket(t, "sim")
	s3Addr := sim.Expose(t, s3.Host())
	dir := t.TempDir()
	goBuild := func(bin string, flags ...string) error {
		build := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, "../../cmd/zeitwork")...)
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %v\n%s", flags, err, out)
		}
		return nil
	}
	if err := goBuild(filepath.Join(dir, "zeitwork-linux-amd64")); err != nil {
		t.Fatal(err)
	}
	// The release phase 3b upgrades to: the same tree with another
	// version, linked while the cluster comes up (only the link differs).
	const newVersion = "sim-v2"
	builtV2 := make(chan error, 1)
	go func() {
		builtV2 <- goBuild(filepath.Join(dir, "zeitwork-linux-amd64-v2"), "-ldflags", "-X github.com/zeitwork/zeitwork/internal/version.Version="+newVersion)
	}()
	// The edge orders from Pebble, the test's private ACME CA, through the
	// Cloudflare emulator and checks DNS-01 against the test's DNS server:
	// cluster.yaml's fields for them (the root in a file next to it).
	if err := os.WriteFile(filepath.Join(dir, "pebble-ca.pem"), host.ACMECARoots, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cluster.yaml")
	binary := "zeitwork-linux-amd64"
	writeFile := func() {
		t.Helper()
		yaml := strings.Replace(string(clusterFile(t, sim, names)), "registry.internal:5000", host.Registry+"\n  insecure: true", 1)
		yaml = strings.Replace(yaml, "  acme_email: ops@zeitwork.com", "  acme_email: ops@zeitwork.com\n"+
			"  acme_directory: "+host.ACMEDirectory+"\n"+
			"  acme_ca: pebble-ca.pem\n"+
			"  acme_dns_resolvers: ['"+host.DNSResolver+"']", 1)
		yaml = strings.Replace(yaml, "  api_token_env: CLOUDFLARE_API_TOKEN", "  api_token_env: CLOUDFLARE_API_TOKEN\n  api_url: "+host.CloudflareAPI, 1)
		yaml = strings.NewReplacer(
			"endpoint: https://s3.eu-central-1.amazonaws.com", "endpoint: http://"+s3Addr,
			"    region: eu-central-1\n    bucket: zeitwork-prod", "    region: "+s3.Region+"\n    bucket: "+s3.Bucket,
			"access_key_id: AKIAEXAMPLE", "access_key_id: "+s3.AccessKeyID,
		).Replace(yaml)
		// BuildKit and its CNI plugins installed by bootstrap, from the
		// binaries scripts/deps.sh caches.
		yaml = strings.Replace(yaml, "  binary: zeitwork-linux-amd64", "  binary: "+binary+"\n"+
			"  buildkitd: "+testenv.Binary(t, "buildkitd")+"\n"+
			"  buildctl: "+testenv.Binary(t, "buildctl")+"\n"+
			"  cni_plugins: "+testenv.Binary(t, "cni"), 1)
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile()
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
		"CLOUDFLARE_API_TOKEN="+host.CloudflareToken,
		"CLUSTER_TOKEN=token",
		"SECRETS_KEYS=k1:"+strings.Repeat("A", 43)+"=",
		"CERTIFICATE_KEYS=c1:"+strings.Repeat("B", 43)+"=",
		"DATABASE_ROLE_PASSWORD_KEY=role-password-key",
		"NODE_PROXY_TOKEN=proxy-token",
		"MANAGEMENT_TOKEN=management-token",
		"S3_SECRET_ACCESS_KEY="+s3.SecretAccessKey.Reveal(),
	))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	phase("machines booted, host services up", start)

	// On failure, what the machines' units said: registered again after
	// each cluster starts, so that it runs before that cluster is gone.
	var diagnosed sync.Once
	diagnose := func() {
		diagnosed.Do(func() {
			if !t.Failed() {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, n := range names {
				cl, err := machine[n].Dial(ctx)
				if err != nil {
					t.Logf("%s: %v", n, err)
					continue
				}
				out, _ := cl.Run(ctx, "systemctl --failed --no-legend --no-pager; journalctl --no-pager -n 25 -u 'zeitwork-*' -u buildkit -u containerd", nil)
				cl.Close()
				t.Logf("%s:\n%s", n, out)
			}
		})
	}
	t.Cleanup(diagnose)
	prepare := func(names ...string) {
		t.Helper()
		for _, n := range names {
			prepareSimMachine(ctx, t, machine[n], n, host)
		}
	}
	prepare(names...)
	var lastRun *stampedLines
	run := func() string {
		t.Helper()
		c, err := bootstrap.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		out := &stampedLines{}
		lastRun = out
		b := &bootstrap.Bootstrap{Cluster: c, Env: env, Out: out, Wait: 5 * time.Minute}
		start := time.Now()
		_, err = b.Run(ctx)
		t.Logf("bootstrap in %v:\n%s", time.Since(start).Round(time.Second), out.String())
		if err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		return out.String()
	}

	// 1. From nothing.
	start = time.Now()
	out := run()
	phase("1. bootstrap from nothing", start)
	for _, want := range []string{
		"[applied] database: migrations: up to date",
		"[applied] op-1: start zeitwork-operator.service zeitwork-api.socket zeitwork-api.service: running",
		"[applied] wk-1: packages: ",
		"[applied] wk-3: start containerd.service zeitwork-nodeagent.service: running",
		"[applied] build-1: start buildkit.service zeitwork-builder.service: running",
		"[applied] edge-1: start zeitwork-edge.socket zeitwork-edge-https.socket zeitwork-edge.service: running",
		"[applied] certificates: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run lacks %q", want)
		}
	}
	units := map[string]string{"op-1": "zeitwork-operator zeitwork-api", "op-2": "zeitwork-operator zeitwork-api", "op-3": "zeitwork-operator",
		"wk-1": "containerd zeitwork-nodeagent", "wk-2": "containerd zeitwork-nodeagent", "wk-3": "containerd zeitwork-nodeagent",
		"build-1": "buildkit zeitwork-builder", "edge-1": "zeitwork-edge"}
	allActive := func() {
		t.Helper()
		for _, n := range names {
			cl, err := machine[n].Dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := cl.Run(ctx, "systemctl is-active "+units[n], nil)
			cl.Close()
			if strings.Count(string(got), "active\n") != len(strings.Fields(units[n])) || strings.Contains(string(got), "inactive") {
				t.Errorf("%s: %s are %q", n, units[n], got)
			}
		}
		// The API answers on the nodes that run it.
		for _, n := range []string{"op-1", "op-2"} {
			u := "http://" + net.JoinHostPort(machine[n].Addr, "8080") + "/v1/health"
			var err error
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
				var resp *http.Response
				if resp, err = http.Get(u); err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				if err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Errorf("%s: %s: %v", n, u, err)
			}
		}
	}
	allActive()
	pool := testdb.Pool(t, dbURL)
	nodes := recordedNodes(ctx, t, pool)
	t.Logf("nodes: %v", nodes)
	if len(nodes) != 3 {
		t.Errorf("%d nodes registered, want the 3 workers: %v", len(nodes), nodes)
	}
	for _, n := range []string{"wk-1", "wk-2", "wk-3"} {
		if !strings.Contains(strings.Join(nodes, ","), machine[n].Addr+":") {
			t.Errorf("%s (%s) is not a registered node: %v", n, machine[n].Addr, nodes)
		}
	}
	edge := net.JoinHostPort(machine["edge-1"].Addr, "443")
	for _, d := range simDomains {
		for _, sni := range []string{d, "anything." + d} {
			if err := platformCertificate(ctx, edge, sni, host); err != nil {
				t.Errorf("edge-1 for %s: %v", sni, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 2. An app across the three workers, through the edge.
	start = time.Now()
	digest := pushApp(t, host.LocalRegistry, "zeitwork-sim/app")
	project, slug := simProject(ctx, t, pool)
	dep := simDeployment(ctx, t, pool, project, host.Registry+"/zeitwork-sim/app", digest)
	waitHealthy(ctx, t, pool, dep, true, true, 4*time.Minute)
	app := "https://" + slug + "." + simDomains[1] + "/"
	get := appClient(edge, host)
	waitAnswer(ctx, t, get, app, 2*time.Minute)
	phase("2. app deployed on 3 workers, answering through the edge", start)
	placed := placements(ctx, t, pool, dep)
	t.Logf("instances: %v", placed)

	// 2b. A build on build-1: `zeitwork deploy` uploads a directory with a
	// Dockerfile through the API on op-1 (straight to the bucket, by the
	// form the API presigns); the builder builds it with the BuildKit
	// bootstrap installed, pushes it, and the operators deploy it across
	// the workers in place of the first.
	start = time.Now()
	api := "http://" + net.JoinHostPort(machine["op-1"].Addr, "8080")
	var cliOut, cliErr bytes.Buffer
	code := cli.Main(ctx, []string{"deploy", simAppDir(t), "-p", slug, "--api", api}, cli.Env{
		Environ: []string{"XDG_CONFIG_HOME=" + t.TempDir(), "ZEITWORK_TOKEN=" + simToken(ctx, t, pool, project), "NO_COLOR=1"},
		Stdout:  &cliOut, Stderr: &cliErr,
	})
	if code != cli.ExitOK {
		t.Fatalf("zeitwork deploy: exit %d\n%s\n%s", code, cliOut.String(), cliErr.String())
	}
	var built uuid.UUID
	var buildStatus, builder string
	if err := pool.QueryRow(ctx, `SELECT p.active_deployment_id, b.status, coalesce(b.builder_id, '') FROM projects p
		JOIN builds b ON b.deployment_id = p.active_deployment_id WHERE p.id = $1`, project).Scan(&built, &buildStatus, &builder); err != nil {
		t.Fatalf("the deployed build: %v", err)
	}
	if built == dep || buildStatus != "succeeded" {
		t.Fatalf("after zeitwork deploy the live deployment is %s (the first was %s), its build %s", built, dep, buildStatus)
	}
	if !strings.Contains(cliOut.String(), "https://"+slug+"."+simDomains[1]) {
		t.Errorf("zeitwork deploy printed %q, not the app's URL", cliOut.String())
	}
	dep = built
	waitHealthy(ctx, t, pool, dep, true, true, 4*time.Minute)
	waitAnswer(ctx, t, get, app, 2*time.Minute)
	phase("2b. built on build-1 from an upload, deployed on 3 workers", start)
	t.Logf("built by %s; instances: %v", builder, placements(ctx, t, pool, dep))

	// 3. Again: nothing to do.
	start = time.Now()
	again := run()
	phase("3. bootstrap again", start)
	if !strings.Contains(again, "nothing changed: all ") {
		t.Errorf("the second run changed something:\n%s", again)
	}
	for _, line := range strings.Split(again, "\n") {
		if strings.Contains(line, "[apply]") {
			t.Errorf("the second run applied: %s", line)
		}
	}

	// 3b. An upgrade: bootstrap with a newer binary rolls it out node by
	// node while clients loop through the edge to the app.
	start = time.Now()
	if err := <-builtV2; err != nil {
		t.Fatal(err)
	}
	t.Logf("the new binary was ready %v into the phase", time.Since(start).Round(time.Millisecond))
	v2, err := os.ReadFile(filepath.Join(dir, "zeitwork-linux-amd64-v2"))
	if err != nil {
		t.Fatal(err)
	}
	binary = "zeitwork-linux-amd64-v2"
	writeFile()
	load := loopThroughEdge(ctx, get, app)
	drains := watchDraining(ctx, t, pool)
	upgraded := run()
	drained := drains.stop()
	edgeBack, _ := lastRun.at("[applied] edge-1: start")
	load.stopAfterAnswer(edgeBack)
	phase("3b. upgraded to "+newVersion+" node by node under load", start)
	t.Logf("the upgrade's steps: %s", strings.Join(lastRun.durations(), ", "))
	checkUpgrade(ctx, t, upgraded, lastRun, load, drained, v2, newVersion, names, machine, units)
	waitHealthy(ctx, t, pool, dep, false, true, 4*time.Minute)
	if t.Failed() {
		t.FailNow()
	}

	// 4. wk-2 is wiped: bare disk, new host key. Once its old pin is
	// deleted (what bootstrap's refusal tells a person to do), bootstrap
	// installs it again as the node it was; meanwhile the app answers.
	start = time.Now()
	var ok, failed atomic.Int64
	stopPoll := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stopPoll:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := get(ctx, app); err != nil {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
		}
	}()
	wk2 := machine["wk-2"]
	wk2.Reinstall(t)
	unpinHost(t, filepath.Join(dir, "cluster.known_hosts"), wk2.Addr)
	prepare("wk-2")
	recovered := run()
	for _, want := range []string{"[applied] wk-2: packages: ", "[applied] wk-2: node identity ", "[applied] wk-2: start containerd.service zeitwork-nodeagent.service: running"} {
		if !strings.Contains(recovered, want) {
			t.Errorf("recovery run lacks %q", want)
		}
	}
	if after := recordedNodes(ctx, t, pool); strings.Join(after, ",") != strings.Join(nodes, ",") {
		t.Errorf("nodes after recovering wk-2:\n%v\nwant\n%v", after, nodes)
	}
	// wk-2's instance is replaced (on another worker while wk-2 was
	// silent), so the deployment is three healthy instances again.
	waitHealthy(ctx, t, pool, dep, false, true, 4*time.Minute)
	close(stopPoll)
	<-polled
	waitAnswer(ctx, t, get, app, time.Minute)
	phase("4. wk-2 wiped and recovered", start)
	t.Logf("through the edge while wk-2 was away: %d answered, %d failed; instances now %v", ok.Load(), failed.Load(), placements(ctx, t, pool, dep))
	if ok.Load() == 0 {
		t.Errorf("the app never answered while wk-2 was away (%d failed)", failed.Load())
	}

	// 5. Fresh machines: the cluster is shut down and removed, eight new
	// machines (a key, host keys and disks of their own) boot at the same
	// addresses; the database alone brings the cluster back.
	start = time.Now()
	before := snapshot(ctx, t, pool)
	subnet := sim.Subnet
	sim.Close(t)
	sim = simmachine.StartWith(t, len(names), simmachine.Options{Internet: debs == "", Containers: true, Subnet: subnet})
	t.Cleanup(diagnose)
	for i, n := range names {
		machine[n] = sim.Machines[i]
	}
	writeFile() // the new machines' key
	if err := os.Remove(filepath.Join(dir, "cluster.known_hosts")); err != nil {
		t.Fatal(err)
	}
	prepare(names...)
	restored := run()
	if !strings.Contains(restored, "[applied] wk-1: node identity ") {
		t.Errorf("restore run does not give wk-1 its recorded identity")
	}
	allActive()
	if after := recordedNodes(ctx, t, pool); strings.Join(after, ",") != strings.Join(nodes, ",") {
		t.Errorf("nodes after the restore:\n%v\nwant\n%v", after, nodes)
	}
	// While the old machines power off, the operators still running
	// replace instances of workers already gone on those still up; once
	// every worker is back, healing spreads them out again, one per worker,
	// and stops any beyond the 3 replicas.
	waitHealthy(ctx, t, pool, dep, true, true, 5*time.Minute)
	waitAnswer(ctx, t, get, app, 2*time.Minute)
	phase("5. restored onto fresh machines", start)
	if after := snapshot(ctx, t, pool); retiredSince(before, after) != before {
		t.Errorf("the database after the restore:\n%s\nbefore:\n%s", after, before)
	}
	after := placements(ctx, t, pool, dep)
	t.Logf("instances after the restore: %v", after)
	if len(after) != 3 {
		t.Logf("NOTE: %d live instances of a 3-replica deployment after the restore", len(after))
	}
}

// prepareSimMachine puts on a bare machine what the test stands in for:
// apt reads the packages cache (when there is one). Everything else,
// BuildKit and the edge's ACME settings included, bootstrap installs.
func prepareSimMachine(ctx context.Context, t *testing.T, m *simmachine.Machine, role string, host *simHost) {
	t.Helper()
	if host.AptRepo == "" {
		return
	}
	cl, err := m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The packages cache instead of the Debian archive: a flat
	// repository, trusted (it holds what the archive's keys signed).
	if err := cl.Upload(ctx, "/etc/apt/sources.list.d/debian.sources", []byte("Types: deb\nURIs: "+host.AptRepo+"\nSuites: ./\nTrusted: yes\n"), 0o644); err != nil {
		t.Fatalf("%s: %v", role, err)
	}
}

// recordedNodes is the nodes table: address, prefix and id of each.
func recordedNodes(ctx context.Context, t *testing.T, pool *pgxpool.Pool) []string {
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

// snapshot is what a restore must keep as it was: nodes, projects,
// deployments, images and the certificates (an edge that ordered them
// again would change them).
func snapshot(ctx context.Context, t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT id::text || ' ' || ipv6_prefix::text || ' ' || internal_address FROM nodes ORDER BY id",
		"SELECT id::text || ' ' || slug || ' ' || coalesce(active_deployment_id::text, '-') FROM projects ORDER BY id",
		"SELECT id::text || ' ' || status FROM deployments ORDER BY id",
		"SELECT id::text || ' ' || repository || '@' || digest FROM images ORDER BY id",
		"SELECT key || ' ' || md5(value) FROM certificates ORDER BY key",
	} {
		rows, err := pool.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// retiredSince is the snapshot after with the one change time may make
// while the cluster is restored: a deployment retiring in before whose
// grace (RETIRE_GRACE, 5 minutes) ended since is stopped in after, and is
// put back as retiring. Any other difference stays.
func retiredSince(before, after string) string {
	lines := strings.Split(after, "\n")
	for i, l := range lines {
		if id, ok := strings.CutSuffix(l, " stopped"); ok && strings.Contains("\n"+before, "\n"+id+" retiring\n") {
			lines[i] = id + " retiring"
		}
	}
	return strings.Join(lines, "\n")
}

// unpinHost deletes addr's line from a known_hosts file.
func unpinHost(t *testing.T, file, addr string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if !strings.HasPrefix(line, addr+" ") {
			keep = append(keep, line)
		}
	}
	if err := os.WriteFile(file, []byte(strings.Join(keep, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// simProject makes the app's organisation and project: port 8080, health
// at /healthz, small enough for the simulated workers.
func simProject(ctx context.Context, t *testing.T, pool *pgxpool.Pool) (uuid.UUID, string) {
	t.Helper()
	p := testdb.Project(t, pool)
	var slug string
	if err := pool.QueryRow(ctx, `UPDATE projects SET port = 8080, health_check_path = '/healthz', cpu_millis = 100, memory_mb = 64
		WHERE id = $1 RETURNING slug`, p).Scan(&slug); err != nil {
		t.Fatal(err)
	}
	return p, slug
}

// simToken signs in the platform's first user (an admin, admitted), moves
// project into the user's organisation, and returns an API token of theirs.
func simToken(ctx context.Context, t *testing.T, pool *pgxpool.Pool, project uuid.UUID) string {
	t.Helper()
	accounts := account.Store{DB: pool}
	user, _, err := accounts.SignIn(ctx, account.Profile{GitHubUserID: 1, Login: "sim", Email: "sim@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE projects SET organisation_id = (SELECT organisation_id FROM organisation_members WHERE user_id = $2)
		WHERE id = $1`, project, user.ID); err != nil {
		t.Fatal(err)
	}
	tok, err := accounts.CreateToken(ctx, user.ID, "sim")
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// simAppDir is a directory `zeitwork deploy` uploads: the test app, built
// static, and a Dockerfile that needs no base image (nothing is pulled).
func simAppDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), ".")
	build.Dir = "../nodeagent/testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build app: %v\n%s", err, out)
	}
	dockerfile := "FROM scratch\nCOPY app /app\nENV PATH=/\nENTRYPOINT [\"/app\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// simDeployment records the pushed image and a deployment of it with 3
// replicas, as a finished build leaves them; the operators' sweep places it.
func simDeployment(ctx context.Context, t *testing.T, pool *pgxpool.Pool, project uuid.UUID, repo, digest string) uuid.UUID {
	t.Helper()
	img, dep := id.New(), id.New()
	if _, err := pool.Exec(ctx, `INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, $3, 'v1', $4)`, img, project, repo, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'upload', 'sim', 3, $3, now())`, dep, project, img); err != nil {
		t.Fatal(err)
	}
	return dep
}

// placements says where dep's live instances are and how they are.
func placements(ctx context.Context, t *testing.T, pool *pgxpool.Pool, dep uuid.UUID) []string {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT n.internal_address || ' ' || i.state || coalesce(' (' || i.state_reason || ')', '')
		FROM instances i JOIN nodes n ON n.id = i.node_id WHERE i.deployment_id = $1 AND i.desired_state = 'running' ORDER BY 1`, dep)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// waitHealthy waits until dep is active with 3 healthy instances (on 3
// different nodes when spread) and, when exact, no other live one.
func waitHealthy(ctx context.Context, t *testing.T, pool *pgxpool.Pool, dep uuid.UUID, spread, exact bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d, err := deployment.Store{DB: pool}.Get(ctx, dep)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status == deployment.StatusFailed {
			t.Fatalf("deployment failed: %v; instances %v", d.FailureReason, placements(ctx, t, pool, dep))
		}
		var healthy, nodes, live int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'healthy'), count(DISTINCT node_id) FILTER (WHERE state = 'healthy'), count(*)
			FROM instances WHERE deployment_id = $1 AND desired_state = 'running'`, dep).Scan(&healthy, &nodes, &live); err != nil {
			t.Fatal(err)
		}
		if d.Status == deployment.StatusActive && (healthy == 3 && live == 3 || !exact && healthy >= 3) && (nodes == 3 || !spread) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s after %v: %d healthy on %d nodes, %d live: %v", d.Status, within, healthy, nodes, live, placements(ctx, t, pool, dep))
		}
		time.Sleep(time.Second)
	}
}

// appClient GETs a URL through the edge at addr, checking its certificate
// against Pebble's root.
func appClient(addr string, host *simHost) func(ctx context.Context, u string) (string, error) {
	var d net.Dialer
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: host.IssuerRoots},
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context, u string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		}
		return string(body), err
	}
}

// waitAnswer waits until u answers 200 through the edge.
func waitAnswer(ctx context.Context, t *testing.T, get func(context.Context, string) (string, error), u string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		body, err := get(ctx, u)
		if err == nil {
			t.Logf("%s: 200 %q", u, body)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v: %v", u, within, err)
		}
		time.Sleep(time.Second)
	}
}

// platformCertificate checks that the edge at addr serves, for sni, a
// certificate for it that Pebble issued.
func platformCertificate(ctx context.Context, addr, sni string, host *simHost) error {
	d := tls.Dialer{Config: &tls.Config{ServerName: sni, RootCAs: host.IssuerRoots}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(conn.(*tls.Conn).ConnectionState().PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	return nil
}

func TestRetiredSinceForgivesOnlyAGraceThatEnded(t *testing.T) {
	before := "n1 fd00::/64\na retiring\nb active\nc retiring\n"
	for _, tc := range []struct{ after, want string }{
		{"n1 fd00::/64\na stopped\nb active\nc retiring\n", before},                                                // a's grace ended
		{"n1 fd00::/64\na stopped\nb active\nc stopped\n", before},                                                 // both ended
		{"n1 fd00::/64\na retiring\nb stopped\nc retiring\n", "n1 fd00::/64\na retiring\nb stopped\nc retiring\n"}, // an active one stopped: a loss
		{"n1 fd00::/64\na failed\nb active\nc retiring\n", "n1 fd00::/64\na failed\nb active\nc retiring\n"},
	} {
		if got := retiredSince(before, tc.after); got != tc.want {
			t.Errorf("retiredSince(%q) = %q, want %q", tc.after, got, tc.want)
		}
	}
}
