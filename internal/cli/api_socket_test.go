package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/api"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestMain is also a role as systemd starts it: with CLI_TEST_ROLE set,
// the test binary is `zeitwork <role>` until SIGTERM.
func TestMain(m *testing.M) {
	if role := os.Getenv("CLI_TEST_ROLE"); role != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		code := Main(ctx, []string{role}, Env{Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestAPIRestartsOnSystemdsSocketRefusingNothing restarts `zeitwork api`
// under load the way systemd restarts zeitwork-api.service while
// zeitwork-api.socket stays open: every request, each on a connection of
// its own, is answered, by one process or the next.
func TestAPIRestartsOnSystemdsSocketRefusingNothing(t *testing.T) {
	url := testdb.NewURL(t)
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
	type proc struct {
		cmd *exec.Cmd
		out *testenv.Buffer
	}
	start := func() proc {
		// systemd sets LISTEN_PID to the pid it execs; sh execs the
		// binary under its own.
		cmd := exec.Command("sh", "-c", `export LISTEN_PID=$$; exec "$0" -test.run=^$`, os.Args[0])
		cmd.Env = append(os.Environ(), "CLI_TEST_ROLE=api", "DATABASE_URL="+url, "CLUSTER_TOKEN=t", "LOG_FORMAT=text",
			// Without the socket the api would listen here itself: taken.
			"API_ADDR="+addr, "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
		cmd.ExtraFiles = []*os.File{file}
		p := proc{cmd, &testenv.Buffer{}}
		cmd.Stdout, cmd.Stderr = p.out, p.out
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
	get := func(client *http.Client) error {
		resp, err := client.Get("http://" + addr + api.OpenAPIPath)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("%d %v", resp.StatusCode, err)
		}
		return nil
	}
	p := start()
	for deadline := time.Now().Add(30 * time.Second); get(http.DefaultClient) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("api did not answer: %s", p.out)
		}
	}
	if !regexp.MustCompile(`msg="listening on a socket from systemd" .*name=http`).MatchString(p.out.String()) {
		t.Errorf("the api does not say it took the socket:\n%s", p.out)
	}

	load := testenv.StartLoad(4, get)
	// Requests answered after a process exited were the next one's.
	load.AnsweredAfter(t, 0, 30*time.Second)
	const restarts = 3
	for range restarts {
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("api exited: %v\n%s", err, p.out)
		}
		n := load.Answered()
		p = start()
		load.AnsweredAfter(t, n, 30*time.Second)
	}
	answered := load.Stop(t)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("api exited: %v\n%s", err, p.out)
	}
	t.Logf("%d requests answered across %d restarts", answered, restarts)
}
