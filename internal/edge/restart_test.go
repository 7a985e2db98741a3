package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/edge"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestMain is also `zeitwork edge` as systemd starts it: with
// EDGE_TEST_CHILD set, the test binary runs edge.Main on its environment
// until SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("EDGE_TEST_CHILD") != "" {
		os.Exit(edgeChild())
	}
	os.Exit(m.Run())
}

func edgeChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := config.Parse[config.Edge]()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool, err := pgxpool.New(ctx, string(cfg.Database.URL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	if err := edge.Main(ctx, cfg, pool, nil, zlog.New(os.Stderr, cfg.Log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// edgeProcess is one generation of the edge: a process given the HTTP
// socket the test holds (as systemd holds zeitwork-edge.socket's) and a
// metrics socket of its own.
type edgeProcess struct {
	cmd     *exec.Cmd
	metrics string
	log     *strings.Builder
}

func startEdgeProcess(t *testing.T, httpSocket *os.File, env []string) *edgeProcess {
	t.Helper()
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := ml.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ml.Close() // the child's copy (and mf, until the child started) keep it open
	defer mf.Close()
	// systemd sets LISTEN_PID to the pid it execs; sh execs the binary
	// under its own.
	cmd := exec.Command("sh", "-c", `export LISTEN_PID=$$; exec "$0" -test.run=^$`, os.Args[0])
	cmd.Env = append(os.Environ(), append(env, "EDGE_TEST_CHILD=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:metrics")...)
	cmd.ExtraFiles = []*os.File{httpSocket, mf}
	p := &edgeProcess{cmd: cmd, metrics: ml.Addr().String(), log: &strings.Builder{}}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// served is the number of requests this process answered with 200.
func (p *edgeProcess) served() int {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "zeitwork_edge_requests_total{") && strings.Contains(line, `code="200"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}

// stop is what systemd does on a restart: SIGTERM, then wait.
func (p *edgeProcess) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("edge exited: %v\n%s", err, p.log)
	}
}

// TestRestartOnSystemdsSocketRefusesNoConnection restarts the edge under
// load the way systemd restarts zeitwork-edge.service while
// zeitwork-edge.socket stays: every request, each on a new connection,
// is answered, by one generation or the next.
func TestRestartOnSystemdsSocketRefusesNoConnection(t *testing.T) {
	eachPath(t, func(t *testing.T, path string) {
		url := testdb.NewURL(t)
		w := newWorld(t, url)
		ctx := context.Background()
		host := w.slug + ".zeitwork.test"
		dep := w.deploy(ctx).String()

		socket, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer socket.Close()
		file, err := socket.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		addr := socket.Addr().String()
		snapshot := filepath.Join(t.TempDir(), "routes.json")
		env := []string{"DATABASE_URL=" + url, "NODE_PROXY_TOKEN=" + token, "EDGE_APPS_DOMAIN=zeitwork.test",
			// Without the socket from systemd, the edge would listen here
			// itself: the address is taken, so it could not.
			"EDGE_HTTP_ADDR=" + addr, "EDGE_HTTPS_ADDR=off", "EDGE_METRICS_ADDR=off",
			"EDGE_ROUTES_SNAPSHOT=" + snapshot, "EDGE_DATA_PATH=" + path, "EDGE_POLL_INTERVAL=1m", "LOG_LEVEL=debug"}

		get := func(client *http.Client) error {
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(body) != dep {
				return fmt.Errorf("%d %q %v", resp.StatusCode, body, err)
			}
			return nil
		}
		gen := startEdgeProcess(t, file, env)
		// The first generation syncs the routes and writes the snapshot
		// the next ones start from.
		until(t, func() bool {
			_, err := os.Stat(snapshot)
			return get(http.DefaultClient) == nil && err == nil
		})

		load := testenv.StartLoad(4, get)
		const restarts = 5
		var served []int
		for i := 0; ; i++ {
			until(t, func() bool { return gen.served() > 1 })
			served = append(served, gen.served())
			if i == restarts {
				break
			}
			gen.stop(t)
			gen = startEdgeProcess(t, file, env)
		}
		answered := load.Stop(t)
		gen.stop(t)
		t.Logf("%d requests answered, served by %d processes (%v requests each, counted before each stop)", answered, len(served), served)
	})
}
