package edge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

const token = "cluster-secret"

// world is a database with three nodes whose agents are played by the
// test: every instance placed on a node becomes an HTTP server behind that
// node's real node-proxy, answering with its deployment id, and every
// instance told to stop is shut down. The operator's lifecycle is the real
// one; so is the edge, syncing its routes from the database.
type world struct {
	t       *testing.T
	pool    *pgxpool.Pool
	lc      *operator.Lifecycle
	project uuid.UUID
	slug    string
	image   uuid.UUID

	mu      sync.Mutex
	running map[uuid.UUID]*httptest.Server
	targets map[uuid.UUID]nodeproxy.Target

	routes *edge.Routes
	edge   *httptest.Server
	path   string // the edge's data path
}

// eachPath runs a test on each of the edge's data paths.
func eachPath(t *testing.T, test func(t *testing.T, path string)) {
	for _, path := range edge.DataPaths {
		t.Run(path, func(t *testing.T) { test(t, path) })
	}
}

// serveProxy serves p on a test server through the world's data path.
func (w *world) serveProxy(p *edge.Proxy) *httptest.Server {
	srv := httptest.NewUnstartedServer(p)
	switch w.path {
	case edge.DataPathFast:
		srv.Listener = p.FastListener(srv.Listener, 5*time.Second, time.Minute)
	case edge.DataPathLoop:
		fl := p.LoopListener(srv.Listener, 5*time.Second, time.Minute)
		if edge.DataPathOf(fl) != edge.DataPathLoop {
			w.t.Fatal("the loop data path runs on goroutines")
		}
		srv.Listener = fl
	}
	srv.Start()
	w.t.Cleanup(srv.Close)
	return srv
}

func newWorld(t *testing.T, url string) *world {
	t.Helper()
	w := &world{t: t, pool: testdb.Pool(t, url), running: map[uuid.UUID]*httptest.Server{}, targets: map[uuid.UUID]nodeproxy.Target{}, routes: &edge.Routes{}}
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		np := httptest.NewServer(nodeproxy.New(token, w.lookup, nil, zlog.Discard()))
		t.Cleanup(np.Close)
		if _, err := (node.Store{DB: w.pool}).Register(ctx, ipam.DefaultCluster, node.Registration{
			ID: id.New(), Hostname: fmt.Sprintf("w%d", i), InternalAddress: np.Listener.Addr().String(), CPUMillis: 4000, MemoryMB: 8192,
		}); err != nil {
			t.Fatal(err)
		}
	}
	w.project = testdb.Project(t, w.pool)
	if err := w.pool.QueryRow(ctx, `SELECT slug FROM projects WHERE id = $1`, w.project).Scan(&w.slug); err != nil {
		t.Fatal(err)
	}
	w.image = id.New()
	if _, err := w.pool.Exec(ctx, `INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('b', 64))`, w.image, w.project); err != nil {
		t.Fatal(err)
	}
	policy := operator.DefaultPolicy
	policy.Poll, policy.RetireGrace = time.Millisecond, 500*time.Millisecond
	w.lc = &operator.Lifecycle{Pool: w.pool, Place: operator.SchedulerPlacer(policy.HeartbeatDeadline), Policy: policy, Log: zlog.Discard()}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.running {
			s.Close()
		}
	})
	return w
}

func (w *world) lookup(_ context.Context, iid uuid.UUID) (nodeproxy.Target, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	tg, ok := w.targets[iid]
	return tg, ok
}

// agents converges once: start what should run, stop what should not.
func (w *world) agents(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, `SELECT id, deployment_id, desired_state, state FROM instances`)
	if err != nil {
		return err
	}
	type inst struct {
		id, dep uuid.UUID
		desired instance.Desired
		state   instance.State
	}
	var all []inst
	for rows.Next() {
		var i inst
		if err := rows.Scan(&i.id, &i.dep, &i.desired, &i.state); err != nil {
			return err
		}
		all = append(all, i)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, i := range all {
		switch {
		case i.desired == instance.DesiredRunning && i.state != instance.StateHealthy:
			dep := i.dep.String()
			srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("X-Seen-Forwarded", r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Forwarded-Proto"))
				fmt.Fprint(rw, dep)
			}))
			w.mu.Lock()
			w.running[i.id] = srv
			w.targets[i.id] = nodeproxy.Target{Addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), Healthy: true}
			w.mu.Unlock()
			if _, err := w.pool.Exec(ctx, `UPDATE instances SET state = 'healthy' WHERE id = $1`, i.id); err != nil {
				return err
			}
		case i.desired == instance.DesiredStopped && i.state != instance.StateStopped:
			// What a node agent does: the instance leaves the node, then
			// the database hears it stopped.
			w.mu.Lock()
			srv := w.running[i.id]
			delete(w.running, i.id)
			delete(w.targets, i.id)
			w.mu.Unlock()
			if srv != nil {
				srv.Close()
			}
			if _, err := w.pool.Exec(ctx, `UPDATE instances SET state = 'stopped' WHERE id = $1`, i.id); err != nil {
				return err
			}
		}
	}
	return nil
}

// deploy takes a new deployment of the project to active.
func (w *world) deploy(ctx context.Context) uuid.UUID {
	w.t.Helper()
	dep := id.New()
	if _, err := w.pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, deploying_at)
		VALUES ($1, $2, 'deploying', 'upload', 'k', 3, $3, now())`, dep, w.project, w.image); err != nil {
		w.t.Fatal(err)
	}
	for range 100 {
		err := w.lc.Deploy(ctx, dep)
		var snooze *river.JobSnoozeError
		if err == nil {
			return dep
		}
		if !errors.As(err, &snooze) {
			w.t.Fatal(err)
		}
		if err := w.agents(ctx); err != nil {
			w.t.Fatal(err)
		}
	}
	w.t.Fatal("deployment never went active")
	return dep
}

// startEdge runs the edge's syncer and proxy.
func (w *world) startEdge(ctx context.Context, pool *pgxpool.Pool, snapshot string) *edge.Syncer {
	w.t.Helper()
	metrics := edge.NewMetrics(prometheus.NewRegistry())
	s := &edge.Syncer{Pool: pool, Routes: w.routes, AppsDomain: "zeitwork.test", SnapshotPath: snapshot, PollInterval: time.Minute, Metrics: metrics, Log: zlog.Discard()}
	go s.Run(ctx)
	w.edge = w.serveProxy(edge.NewProxy(edge.ProxyConfig{Routes: w.routes, Token: token, UpstreamTimeout: 10 * time.Second, Metrics: metrics, Log: zlog.Discard()}))
	return s
}

func (w *world) get(client *http.Client, host string) (int, string, error) {
	req, _ := http.NewRequest("GET", w.edge.URL+"/", nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// eventually waits for the edge to answer host with want (no time limit
// assertion: the deadline only stops a broken test from hanging).
func (w *world) eventually(host string, want func(code int, body string) bool) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := w.get(http.DefaultClient, host)
		if err == nil && want(code, body) {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: still %d %q %v", host, code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSwitchingDeploymentsUnderLoadLosesNoRequest(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		w.path = path
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w.startEdge(ctx, w.pool, "")
		host := w.slug + ".zeitwork.test"
		v1 := w.deploy(ctx)
		w.eventually(host, func(code int, body string) bool { return code == 200 && body == v1.String() })

		v2 := id.New() // filled in below; the load only needs to know it later
		var ok, failed atomic.Int64
		var seen sync.Map
		var firstFailure atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, err := w.get(client, host)
					if err != nil || code != 200 {
						failed.Add(1)
						firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, body, err))
						continue
					}
					ok.Add(1)
					seen.Store(body, true)
				}
			})
		}
		time.Sleep(200 * time.Millisecond)
		v2 = w.deploy(ctx)
		w.eventually(host, func(code int, body string) bool { return body == v2.String() })
		// Past the grace, the old deployment is retired and its instances stop.
		time.Sleep(600 * time.Millisecond)
		if n, err := w.lc.Retire(ctx); err != nil || n != 1 {
			t.Fatalf("retired %d, %v", n, err)
		}
		if err := w.agents(ctx); err != nil {
			t.Fatal(err)
		}
		var stopped int
		w.pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE deployment_id = $1 AND state = 'stopped'`, v1).Scan(&stopped)
		if stopped != 3 {
			t.Fatalf("%d of v1's instances stopped", stopped)
		}
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()

		if failed.Load() != 0 {
			t.Fatalf("%d of %d requests failed during the switch; first: %v", failed.Load(), failed.Load()+ok.Load(), firstFailure.Load())
		}
		_, sawV1 := seen.Load(v1.String())
		_, sawV2 := seen.Load(v2.String())
		if !sawV1 || !sawV2 || ok.Load() < 100 {
			t.Fatalf("load saw v1 %v, v2 %v, in %d requests", sawV1, sawV2, ok.Load())
		}
		t.Logf("%d requests across the switch, none failed", ok.Load())
		// The old deployment's preview host is gone with its instances; the
		// new one's answers.
		w.eventually(v1.String()+".zeitwork.test", func(code int, _ string) bool { return code == 404 })
		w.eventually(v2.String()+".zeitwork.test", func(code int, body string) bool { return code == 200 && body == v2.String() })
	})
}

// forwarder is a TCP hop to Postgres that the test can cut, as a network
// partition or a database outage would.
type forwarder struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func forward(t *testing.T, to string) *forwarder {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(f.cut)
	return f
}

func (f *forwarder) cut() {
	f.l.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func TestEdgeKeepsRoutingWithoutTheDatabaseAndRestartsFromSnapshot(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		url := testdb.NewURL(t)
		w := newWorld(t, url)
		w.path = path
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		// The edge reaches the database through a hop the test can cut.
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		f := forward(t, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
		viaHop := strings.Replace(url, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port), f.l.Addr().String(), 1)
		snapshot := filepath.Join(t.TempDir(), "routes.json")
		edgePool := testdb.Pool(t, viaHop)
		syncer := w.startEdge(ctx, edgePool, snapshot)

		host := w.slug + ".zeitwork.test"
		v1 := w.deploy(ctx)
		w.eventually(host, func(code int, body string) bool { return code == 200 && body == v1.String() })

		// The snapshot is written behind the table: wait for it to catch up.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if snap, err := edge.LoadSnapshot(snapshot); err == nil {
				if r, ok := snap.Lookup(host); ok && r.DeploymentID == v1 && len(r.Backends) == 3 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the route never reached the snapshot")
			}
		}
		f.cut()
		if err := syncer.Sync(ctx); err == nil {
			t.Fatal("sync succeeded with the database cut off")
		}
		for range 20 {
			if code, body, err := w.get(http.DefaultClient, host); err != nil || code != 200 || body != v1.String() {
				t.Fatalf("with the database away: %d %q %v", code, body, err)
			}
		}

		// A new edge, started while the database is still away, serves the
		// snapshot the first one left.
		restarted := &edge.Routes{}
		deadPool := testdb.Pool(t, viaHop)
		s2 := &edge.Syncer{Pool: deadPool, Routes: restarted, AppsDomain: "zeitwork.test", SnapshotPath: snapshot, PollInterval: time.Minute, Log: zlog.Discard()}
		if err := s2.Restore(); err != nil {
			t.Fatal(err)
		}
		go s2.Run(ctx)
		p2 := w.serveProxy(edge.NewProxy(edge.ProxyConfig{Routes: restarted, Token: token, UpstreamTimeout: 10 * time.Second, Log: zlog.Discard()}))
		req, _ := http.NewRequest("GET", p2.URL+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != v1.String() {
			t.Fatalf("restarted edge: %d %q", resp.StatusCode, body)
		}
	})
}

func TestRouteChangesReachTheEdgeThroughNotify(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		w := newWorld(t, testdb.NewURL(t))
		w.path = path
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Polling is a minute: only a notification can make these visible in time.
		w.startEdge(ctx, w.pool, "")
		host := w.slug + ".zeitwork.test"
		w.eventually(host, func(code int, _ string) bool { return code == 404 })
		v1 := w.deploy(ctx)
		w.eventually(host, func(code int, body string) bool { return code == 200 && body == v1.String() })

		// A verified custom domain routes; removing it stops routing.
		domain := id.New()
		if _, err := w.pool.Exec(ctx, `INSERT INTO domains (id, project_id, name, status, verification_token, verified_at) VALUES ($1, $2, 'app.customer.test', 'verified', 't', now())`, domain, w.project); err != nil {
			t.Fatal(err)
		}
		w.eventually("App.Customer.test.", func(code int, body string) bool { return code == 200 && body == v1.String() })
		if _, err := w.pool.Exec(ctx, `DELETE FROM domains WHERE id = $1`, domain); err != nil {
			t.Fatal(err)
		}
		w.eventually("app.customer.test", func(code int, _ string) bool { return code == 404 })

		// A node change can touch any project: it rebuilds the whole table.
		if _, err := w.pool.Exec(ctx, `UPDATE nodes SET status = 'dead'`); err != nil {
			t.Fatal(err)
		}
		w.eventually(host, func(code int, _ string) bool { return code == 503 })
		if _, err := w.pool.Exec(ctx, `UPDATE nodes SET status = 'active'`); err != nil {
			t.Fatal(err)
		}
		w.eventually(host, func(code int, body string) bool { return code == 200 && body == v1.String() })

		// Instances that turn unhealthy leave the table: the project answers 503.
		if _, err := w.pool.Exec(ctx, `UPDATE instances SET state = 'unhealthy' WHERE deployment_id = $1`, v1); err != nil {
			t.Fatal(err)
		}
		w.eventually(host, func(code int, _ string) bool { return code == 503 })
	})
}
