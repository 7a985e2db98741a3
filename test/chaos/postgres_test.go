package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// postgres is a Postgres cluster of the test's own (initdb, pg_ctl), on a
// port the kernel chose, so that the test can restart or stop it without
// touching the shared one other tests use.
type postgres struct {
	t    *testing.T
	dir  string
	data string
	port int
}

// startPostgres initialises and starts a cluster, creates the database
// "zeitwork" in it and returns its URL. Postgres refuses to run as root,
// so the cluster belongs to the postgres user.
func startPostgres(t *testing.T) (*postgres, string) {
	t.Helper()
	for _, bin := range []string{"initdb", "pg_ctl", "runuser"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Unavailable(t, bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "zwchaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}
	pg := &postgres{t: t, dir: dir, data: filepath.Join(dir, "data"), port: testenv.ReservedPort(t)}
	pg.run("initdb", "-D", pg.data, "-A", "trust", "-U", "zeitwork", "--no-sync")
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\n", pg.port, dir)
	if err := os.WriteFile(filepath.Join(pg.data, "postgresql.auto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pg.run("pg_ctl", "-D", pg.data, "-l", filepath.Join(dir, "postgres.log"), "-w", "start")
	t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", "pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop").Run()
	})
	conn, err := pgx.Connect(context.Background(), pg.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `CREATE DATABASE zeitwork`); err != nil {
		t.Fatal(err)
	}
	return pg, pg.url("zeitwork")
}

func (pg *postgres) url(db string) string {
	return fmt.Sprintf("postgres://zeitwork@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// run runs a Postgres tool as the postgres user.
func (pg *postgres) run(args ...string) {
	pg.t.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	cmd.Dir = pg.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(pg.dir, "postgres.log"))
		pg.t.Fatalf("%s: %v\n%s\n%s", strings.Join(args, " "), err, out, log)
	}
}

// migrate applies the schema with `zeitwork migrate`, as an installation does.
func migrate(t *testing.T, url string) {
	t.Helper()
	cmd := exec.Command(zeitworkBinary(t), "migrate")
	cmd.Env = []string{"DATABASE_URL=" + url, "PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zeitwork migrate: %v\n%s", err, out)
	}
}

// TestPostgresRestartUnderLoad: Postgres restarts while clients hit the
// app through the edge. No request fails; every role reconnects by itself
// (the agents heartbeat again, the builder builds, the operator deploys,
// the edge routes to the next deployment).
func TestPostgresRestartUnderLoad(t *testing.T) {
	pg, url := startPostgres(t)
	migrate(t, url)
	c := startCluster(t, clusterOpts{nodes: 3, dbURL: url})
	first := c.startDeploy()
	c.waitActive(first, 3*time.Minute)
	c.converged(first)

	l := c.loadThroughEdge()
	time.Sleep(time.Second)
	restarted := time.Now()
	pg.run("pg_ctl", "-D", pg.data, "-l", filepath.Join(pg.dir, "postgres.log"), "-m", "fast", "-w", "restart")
	t.Logf("Postgres restarted (fast shutdown) in %s", time.Since(restarted).Round(time.Millisecond))
	// Long enough for every role to notice, and for the edge to poll.
	time.Sleep(6 * time.Second)

	c.wait(30*time.Second, "every node agent to heartbeat after the restart", func() bool {
		var stale int
		if err := c.pool.QueryRow(context.Background(), `SELECT count(*) FROM nodes WHERE last_heartbeat_at < $1`, restarted).Scan(&stale); err != nil {
			return false
		}
		return stale == 0
	})
	second := c.startDeploy()
	c.waitActive(second, 3*time.Minute)
	c.wait(30*time.Second, "the edge to route to the second deployment", func() bool {
		live, _ := instance.Store{DB: c.pool}.ListLive(context.Background(), second)
		for _, in := range live {
			if l.answered(in.Addr.String()) > 0 {
				return true
			}
		}
		return false
	})
	ok, failed := l.stop()
	t.Logf("through the edge across the restart and the next deploy: %d requests answered, %d failed", ok, len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d requests through the edge failed; first: %s", len(failed), failed[0])
	}
	for _, p := range c.all() {
		if !p.running() {
			t.Errorf("%s exited after the restart instead of reconnecting", p.name)
		}
	}
}

// load is clients hitting the project's host through the edge.
type load struct {
	stopped chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	byAddr  map[string]int
	ok      int
	failed  []string
}

func (c *cluster) loadThroughEdge() *load {
	c.t.Helper()
	proj, err := c.q.ProjectGetByID(context.Background(), c.project)
	if err != nil {
		c.t.Fatal(err)
	}
	host := proj.Slug + ".zeitwork.localhost"
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", c.base-18)
	get := func(hc *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", edgeURL, nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	c.wait(30*time.Second, "the edge to route "+host, func() bool {
		code, _, err := get(http.DefaultClient)
		return err == nil && code == 200
	})
	l := &load{stopped: make(chan struct{}), done: make(chan struct{}), byAddr: map[string]int{}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-l.stopped:
					return
				default:
				}
				code, body, err := get(hc)
				l.mu.Lock()
				if err != nil || code != 200 {
					l.failed = append(l.failed, fmt.Sprintf("%s %d %q %v", time.Now().Format("15:04:05.000"), code, body, err))
				} else {
					addr, _, _ := strings.Cut(body, " ")
					l.byAddr[addr]++
					l.ok++
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

func (l *load) answered(addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byAddr[addr]
}

// stop ends the load and returns how many requests were answered and the
// failures.
func (l *load) stop() (int, []string) {
	close(l.stopped)
	<-l.done
	return l.ok, l.failed
}
