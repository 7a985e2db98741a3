package bootstrap_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestEdgeSocketOutlivesItsServiceOnASimulatedMachine installs the edge's
// units as bootstrap renders them on a machine with systemd, a stand-in
// for `zeitwork edge` (testdata/sockserve) as the binary, and restarts
// them the way bootstrap does, under load: systemd keeps the socket open
// while the service restarts, so no connection is refused and each
// process answers; the socket itself is restarted only when its unit
// changed.
func TestEdgeSocketOutlivesItsServiceOnASimulatedMachine(t *testing.T) {
	sim := simmachine.Start(t, 1)
	m := sim.Machines[0]
	bin := filepath.Join(t.TempDir(), "zeitwork")
	build := exec.Command("go", "build", "-o", bin, "./testdata/sockserve")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := bootstrap.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	var n bootstrap.Node
	for _, cn := range c.Nodes {
		if cn.Name == "edge-1" {
			n = cn
		}
	}
	files, err := bootstrap.Render(c, n, bootstrap.Values{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := bootstrap.NewSSHHost(cl, "")
	defer h.Close()
	install := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		if _, err := h.Install(ctx, p, data, mode); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	for _, f := range files {
		install(f.Path, f.Data, f.Mode)
	}
	install(bootstrap.BinaryPath, binary, 0o755)
	units := bootstrap.Units(n)
	restart := func() {
		t.Helper()
		if err := h.Restart(ctx, units); err != nil {
			out, _ := cl.Run(ctx, "systemctl status --no-pager 'zeitwork-edge*'; journalctl --no-pager -n 30 -u 'zeitwork-edge*'", nil)
			t.Fatalf("restart: %v\n%s", err, out)
		}
	}
	socketStarted := func() string {
		t.Helper()
		out, err := cl.Run(ctx, "systemctl show -P ActiveEnterTimestampMonotonic zeitwork-edge.socket", nil)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	restart()
	url := "http://" + net.JoinHostPort(m.Addr, bootstrap.EdgeHTTPPort) + "/"
	get := func(client *http.Client) (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	first, err := get(http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	since := socketStarted()

	var pids sync.Map
	pids.Store(first, true)
	load := testenv.StartLoad(4, func(client *http.Client) error {
		pid, err := get(client)
		if err == nil {
			pids.Store(pid, true)
		}
		return err
	})
	const restarts = 3
	for range restarts {
		restart()
		// Answered after the restart returned: by the new process.
		load.AnsweredAfter(t, load.Answered(), time.Minute)
	}
	answered := load.Stop(t)
	processes := 0
	pids.Range(func(_, _ any) bool { processes++; return true })
	t.Logf("%d requests answered across %d restarts by %d processes", answered, restarts, processes)
	if processes != restarts+1 {
		t.Errorf("%d processes answered, want %d (one per start)", processes, restarts+1)
	}
	if got := socketStarted(); got != since {
		t.Errorf("the socket was restarted with its service (active since %s, then %s)", since, got)
	}

	// A changed socket unit is opened anew, and served.
	for _, f := range files {
		if f.Path == "/etc/systemd/system/zeitwork-edge.socket" {
			install(f.Path, []byte(strings.Replace(string(f.Data), "Backlog=4096", "Backlog=1024", 1)), f.Mode)
		}
	}
	restart()
	if got := socketStarted(); got == since {
		t.Error("a changed socket unit was not restarted")
	}
	out, err := cl.Run(ctx, "systemctl show -P Backlog zeitwork-edge.socket", nil)
	if err != nil || strings.TrimSpace(string(out)) != "1024" {
		t.Errorf("socket's backlog after the change: %q %v", out, err)
	}
	if _, err := get(http.DefaultClient); err != nil {
		t.Errorf("after the socket's restart: %v", err)
	}
	if stopped, err := h.Stopped(ctx, units); err != nil || len(stopped) > 0 {
		t.Errorf("stopped: %v %v", stopped, err)
	}
}
