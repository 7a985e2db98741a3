package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestDevFirstStartServesHello: `zeitwork dev` as a developer first runs
// it ends with examples/hello answering at the URL it prints, through the
// edge, and the CLI signed in as the dev user; the next start finds both
// and deploys nothing.
func TestDevFirstStartServesHello(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (simulated nodes are network namespaces)", fmt.Errorf("uid %d", os.Geteuid()))
	}
	reg := testenv.Registry(t)
	testenv.Buildkit(t)
	testenv.Containerd(t)
	requireBaseImages(t, reg, []byte("FROM "+reg+"/library/node:22-bookworm-slim\n"))
	p := &platform{t: t, dbURL: testdb.Empty(t), state: t.TempDir(), out: &testenv.Buffer{}, errOut: &testenv.Buffer{}}
	p.prefix = testenv.DevPrefix(t, "zwhello", 1)
	p.base = testenv.DevPortBase(t, 210)
	config := t.TempDir()

	// run starts dev as a developer would (no --bare), with its own config
	// home, and returns how to stop it.
	run := func() (stop func()) {
		p.out = &testenv.Buffer{} // this start's output alone
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- cli.Main(ctx, []string{"dev"}, cli.Env{Environ: append(os.Environ(),
				"DATABASE_URL="+p.dbURL, "DEV_STATE_DIR="+p.state, "DEV_NODES=1", "DEV_PREFIX="+p.prefix,
				fmt.Sprintf("DEV_PORT_BASE=%d", p.base), "LOG_LEVEL=warn", "XDG_CONFIG_HOME="+config),
				Stdout: p.out, Stderr: p.errOut})
		}()
		return func() {
			cancel()
			select {
			case code := <-done:
				if code != cli.ExitOK {
					t.Errorf("dev exited %d after Ctrl-C", code)
				}
			case <-time.After(time.Minute):
				t.Error("dev did not stop")
			}
		}
	}
	stop := run()
	p.pool = testdb.Pool(t, p.dbURL)
	p.q = db.New(p.pool)
	t.Cleanup(func() {
		// As startPlatform's cleanup: the agents stop the instances, then
		// dev stops, then whatever is left goes.
		p.pool.Exec(context.Background(), `UPDATE deployments SET status = 'stopped' WHERE status = 'active'`)
		p.pool.Exec(context.Background(), `UPDATE instances SET desired_state = 'stopped'`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			var n int
			p.pool.QueryRow(context.Background(), `SELECT count(*) FROM instances WHERE state NOT IN ('stopped', 'failed')`).Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		nodes, _ := p.q.NodeList(context.Background())
		stop()
		removeContainersOf(t, nodes)
	})

	began := time.Now()
	running := func() bool { return strings.Contains(p.out.String(), "Zeitwork dev is running") }
	p.wait(5*time.Minute, "dev to deploy examples/hello and print its summary", running)
	firstTook := time.Since(began)
	want := fmt.Sprintf("http://hello.zeitwork.localhost:%d", p.base-18)
	helloLine := regexp.MustCompile(`(?m)^  hello +(\S+) \(examples/hello\)$`)
	m := helloLine.FindStringSubmatch(p.out.String())
	if m == nil || m[1] != want {
		t.Fatalf("dev's summary has no hello line for %s:\n%s\n%s", want, p.out.String(), lastN(p.errOut.String(), 40))
	}
	if got := atURL(t, p, m[1]); got != "Hello from Zeitwork\n" {
		t.Fatalf("%s answers %q", m[1], got)
	}
	if !strings.Contains(p.out.String(), "\nCLI: signed in as dev (zeitwork whoami)\n") {
		t.Errorf("dev does not say the CLI is signed in:\n%s", p.out.String())
	}
	creds := filepath.Join(config, "zeitwork", "credentials.json")
	if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials %s: %v, %v", creds, fi, err)
	}
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), []string{"whoami"}, cli.Env{Environ: []string{"XDG_CONFIG_HOME=" + config}, Stdout: &out, Stderr: &errOut}); code != cli.ExitOK || !strings.Contains(out.String(), "dev") {
		t.Fatalf("zeitwork whoami: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	// The next start reuses both.
	stop()
	began = time.Now()
	stop = run()
	p.wait(2*time.Minute, "dev to start again", running)
	againTook := time.Since(began)
	if m := helloLine.FindStringSubmatch(p.out.String()); m == nil || m[1] != want || !strings.Contains(p.out.String(), "serving: "+want) {
		t.Fatalf("the second start does not find hello serving:\n%s", p.out.String())
	}
	var deployments, tokens int
	p.pool.QueryRow(context.Background(), `SELECT count(*) FROM deployments`).Scan(&deployments)
	p.pool.QueryRow(context.Background(), `SELECT count(*) FROM api_tokens`).Scan(&tokens)
	if deployments != 1 || tokens != 1 {
		t.Fatalf("after a restart: %d deployments, %d API tokens; want 1 and 1", deployments, tokens)
	}
	if got := atURL(t, p, want); got != "Hello from Zeitwork\n" {
		t.Fatalf("after a restart %s answers %q", want, got)
	}
	t.Logf("first start → hello serving: %s; second start → summary: %s", firstTook.Round(100*time.Millisecond), againTook.Round(100*time.Millisecond))
}
