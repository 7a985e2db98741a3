package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
)

// platform is `zeitwork dev --bare` as a process of its own, on the
// bench's database, prefix and ports: what the e2e tests start, with the
// binary under test.
type platform struct {
	o       options
	dbURL   string
	pool    *pgxpool.Pool
	state   string
	prefix  string
	base    int
	api     string // http://localhost:<base-20>
	edge    string // 127.0.0.1:<base-18>
	dev     *exec.Cmd
	exited  chan error
	browser *http.Client
	token   string
	http    *http.Client
}

// startPlatform runs dev and waits for its API and its nodes.
func startPlatform(ctx context.Context, o options, dbURL, work string) (*platform, error) {
	p := &platform{o: o, dbURL: dbURL, state: filepath.Join(work, "state"), exited: make(chan error, 1),
		http: &http.Client{Timeout: 10 * time.Second}}
	p.prefix = fmt.Sprintf("zwbd-%06x", rand.IntN(1<<24))
	base, err := freeBase()
	if err != nil {
		return nil, err
	}
	p.base = base
	p.api = fmt.Sprintf("http://localhost:%d", base-20)
	p.edge = fmt.Sprintf("127.0.0.1:%d", base-18)
	log, err := os.Create(filepath.Join(work, "dev.log"))
	if err != nil {
		return nil, err
	}
	p.dev = exec.Command(o.zeitwork, "dev", "--bare")
	p.dev.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "DEV_STATE_DIR="+p.state, fmt.Sprintf("DEV_NODES=%d", o.nodes),
		"DEV_PREFIX="+p.prefix, fmt.Sprintf("DEV_PORT_BASE=%d", base), "LOG_LEVEL=warn",
		// The replaced deployments leave the nodes quickly: each run deploys
		// several times over.
		"RETIRE_GRACE=1s")
	if !o.boost {
		p.dev.Env = append(p.dev.Env, "INSTANCE_START_BOOST=0")
	}
	p.dev.Stdout, p.dev.Stderr = log, log
	if err := p.dev.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- p.dev.Wait(); log.Close() }()
	fmt.Fprintf(os.Stderr, "bench/deploy: dev started (prefix %s, ports from %d, log %s)\n", p.prefix, base-20, log.Name())
	if p.pool, err = pgxpool.New(ctx, dbURL); err != nil {
		return p, err
	}
	if err := p.wait(ctx, 2*time.Minute, "the api and the nodes", func() (bool, error) {
		res, err := p.http.Get(p.api + "/v1/health")
		if err != nil {
			return false, nil
		}
		res.Body.Close()
		var n int
		if err := p.pool.QueryRow(ctx, `SELECT count(*) FROM nodes WHERE status = 'active'`).Scan(&n); err != nil {
			return false, err
		}
		return res.StatusCode == 200 && n == o.nodes, nil
	}); err != nil {
		return p, err
	}
	return p, p.signIn()
}

// freeBase picks DEV_PORT_BASE so that the ports dev takes (base-20 up to
// base+200) are free now. Dev binds them a moment later; a clash fails
// the run, it does not measure wrong.
func freeBase() (int, error) {
	for range 50 {
		base := 33000 + rand.IntN(20000)
		ok := true
		for port := base - 20; port <= base+200 && ok; port++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free port range for dev")
}

// wait polls cond until it holds, dev exits, or within passes.
func (p *platform) wait(ctx context.Context, within time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s (dev's log: %s)", what, within, filepath.Join(filepath.Dir(p.state), "dev.log"))
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("%s: dev exited: %v", what, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// signIn goes through the emulator's GitHub sign-in and App installation
// as a browser would, and mints an API token for the CLI.
func (p *platform) signIn() error {
	jar, _ := cookiejar.New(nil)
	p.browser = &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if err := p.call("GET", "/v1/auth/github?next=/v1/me", "", 200, nil); err != nil {
		return fmt.Errorf("sign in: %w", err)
	}
	if err := p.call("GET", "/v1/github/install?next=/v1/github/installations", "", 200, nil); err != nil {
		return fmt.Errorf("install the App: %w", err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := p.call("POST", "/v1/tokens", `{"name":"bench/deploy"}`, 201, &tok); err != nil {
		return err
	}
	p.token = tok.Token
	return nil
}

// call is one API request with the browser's session.
func (p *platform) call(method, path, body string, want int, out any) error {
	req, err := http.NewRequest(method, p.api+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := p.browser.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// answer is what the edge answers for host, "" when it does not (yet).
func (p *platform) answer(host string) string {
	req, _ := http.NewRequest("GET", "http://"+p.edge+"/", nil)
	req.Host = host
	res, err := p.http.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// stop stops every instance, then dev, and removes what the nodes left on
// the machine: containers, network namespaces and nftables tables of
// this platform's prefix and nodes only.
func (p *platform) stop(ctrdAddr string) {
	ctx := context.Background()
	var nodes []string
	if p.pool != nil {
		_, _ = p.pool.Exec(ctx, `UPDATE deployments SET status = 'stopped' WHERE status IN ('active', 'deploying', 'retiring')`)
		_, _ = p.pool.Exec(ctx, `UPDATE instances SET desired_state = 'stopped'`)
		_ = p.wait(ctx, 30*time.Second, "the instances to stop", func() (bool, error) {
			var n int
			err := p.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE state NOT IN ('stopped', 'failed')`).Scan(&n)
			return n == 0, err
		})
		rows, err := p.pool.Query(ctx, `SELECT id::text FROM nodes`)
		if err == nil {
			for rows.Next() {
				var id string
				if rows.Scan(&id) == nil {
					nodes = append(nodes, id)
				}
			}
			rows.Close()
		}
		p.pool.Close()
	}
	if p.dev != nil && p.dev.Process != nil {
		_ = p.dev.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.dev.Process.Kill()
			<-p.exited
		}
	}
	removeContainers(ctrdAddr, nodes)
	for _, n := range nodes {
		if id, err := uuid.Parse(n); err == nil {
			_ = nodeagent.RemoveSimulatedNetns(id)
		}
	}
	for i := 1; i <= p.o.nodes; i++ {
		_ = exec.Command("ip", "netns", "delete", devenv.NodeName(p.prefix, i)).Run()
		_ = exec.Command("nft", "delete", "table", "inet", devenv.NodeName(p.prefix, i)).Run()
		if err := removeNamespace(ctrdAddr, devenv.NodeName(p.prefix, i)); err != nil {
			fmt.Fprintf(os.Stderr, "bench/deploy: containerd namespace %s: %v\n", devenv.NodeName(p.prefix, i), err)
		}
	}
}

// removeContainers deletes what the agents did not stop in time: the
// containers their nodes own, in the nodes' containerd namespaces.
func removeContainers(addr string, nodes []string) {
	if len(nodes) == 0 {
		return
	}
	c, err := client.New(addr)
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		return
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		for _, n := range nodes {
			ctrs, err := c.Containers(nctx, fmt.Sprintf(`labels."dev.zeitwork.owner"==%q`, n))
			if err != nil {
				continue
			}
			for _, ctr := range ctrs {
				if task, err := ctr.Task(nctx, nil); err == nil {
					_, _ = task.Delete(nctx, client.WithProcessKill)
				}
				_ = ctr.Delete(nctx, client.WithSnapshotCleanup)
			}
		}
	}
}

// removeNamespace empties a containerd namespace of this bench (what is
// left of its containers, images, leases, snapshots and content) and
// deletes it, then the cgroups runc made for it.
func removeNamespace(addr, ns string) error {
	c, err := client.New(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), time.Minute)
	defer cancel()
	all, err := c.NamespaceService().List(ctx)
	if err != nil || !slices.Contains(all, ns) {
		return err
	}
	var errs []error
	ctrs, _ := c.Containers(ctx)
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, client.WithProcessKill)
		}
		errs = append(errs, ctr.Delete(ctx, client.WithSnapshotCleanup))
	}
	imgs, _ := c.ImageService().List(ctx)
	for _, img := range imgs {
		errs = append(errs, c.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()))
	}
	ls, _ := c.LeasesService().List(ctx)
	for _, l := range ls {
		errs = append(errs, c.LeasesService().Delete(ctx, l, leases.SynchronousDelete))
	}
	sn := c.SnapshotService("")
	for range 20 { // children first: a parent goes once its children have
		var keys []string
		parents := map[string]bool{}
		_ = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			keys = append(keys, info.Name)
			parents[info.Parent] = true
			return nil
		})
		if len(keys) == 0 {
			break
		}
		for _, k := range keys {
			if !parents[k] {
				_ = sn.Remove(ctx, k)
			}
		}
	}
	_ = c.ContentStore().Walk(ctx, func(info content.Info) error {
		_ = c.ContentStore().Delete(ctx, info.Digest)
		return nil
	})
	errs = append(errs, c.NamespaceService().Delete(ctx, ns))
	for _, ctl := range []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "unified", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", ctl, ns))
	}
	return errors.Join(errs...)
}
