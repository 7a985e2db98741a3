package builder_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestRunStepsReachTheInternetButNotTheHost runs a RUN step on the
// buildkitd the builder uses and has it try the platform's services on this
// host (Postgres, the registry, an API listening on every address, the
// step's own gateway) and one address outside, which stands in for the
// internet. Only the outside one may answer. With buildkitd's worker on the
// host's network (what it was before), every service on the host answers.
func TestRunStepsReachTheInternetButNotTheHost(t *testing.T) {
	bkit, reg := stack(t)
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (network namespaces)", fmt.Errorf("euid %d", os.Geteuid()))
	}
	outside := outsideListener(t)
	api, err := net.Listen("tcp", ":0") // the API or any node service bound to all addresses
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	apiPort := fmt.Sprint(api.Addr().(*net.TCPAddr).Port)
	go acceptAndClose(api)

	pg, err := url.Parse(testenv.Endpoints(t).Database.URL.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]string{
		"postgres":    pg.Host,
		"registry":    reg.Host,
		"api-gateway": "gateway:" + apiPort,
		"outside":     outside,
	}
	for i, a := range hostAddrs(t) {
		// An address on a link that is down (another test's) answers no one.
		addr := net.JoinHostPort(a, apiPort)
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			targets[fmt.Sprintf("api-host%d", i)] = addr
		}
	}
	if len(targets) == 4 {
		t.Fatal("the API listener answers on none of the host's addresses")
	}
	// The real internet where this machine has it (here: the Debian mirror).
	if addrs, err := net.LookupHost("deb.debian.org"); err == nil && len(addrs) > 0 {
		mirror := net.JoinHostPort(addrs[0], "80")
		if c, err := net.DialTimeout("tcp", mirror, 3*time.Second); err == nil {
			c.Close()
			targets["outside-mirror"] = mirror
		}
	}
	// The probe must reach the services from this host, or "BLOCKED" below
	// would prove nothing.
	for name, addr := range targets {
		if name == "api-gateway" {
			continue
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("%s (%s) is not reachable from the host itself: %v", name, addr, err)
		}
		c.Close()
	}

	ctxDir := probeContext(t)
	args := []string{`"/probe"`}
	for name, addr := range targets {
		args = append(args, fmt.Sprintf("%q", name+"="+addr))
	}
	// The id keeps BuildKit from answering from its cache.
	df := fmt.Sprintf("FROM scratch\nCOPY probe /probe\nRUN [%s, %q]\n", strings.Join(args, ", "), "nonce="+id.New().String())
	var out bytes.Buffer
	if _, err := bkit.Build(context.Background(), builder.Request{
		ContextDir: ctxDir, Dockerfile: []byte(df),
		Repository: "zeitwork-test/netprobe", Tag: id.New().String(), Registry: reg,
	}, &out); err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	log := out.String()
	for name, addr := range targets {
		want := "BLOCKED " + name + " "
		if strings.HasPrefix(name, "outside") {
			want = "REACHED " + name + " "
		}
		if !strings.Contains(log, want) {
			t.Errorf("%s (%s): want %q in the step's output", name, addr, strings.TrimSpace(want))
		}
	}
	// Nor may a Dockerfile ask for the host's network, or for a sandbox
	// without limits: neither entitlement is granted.
	for _, flag := range []string{"--network=host", "--security=insecure"} {
		df := fmt.Sprintf("FROM scratch\nCOPY probe /probe\nRUN %s [\"/probe\", %q, %q]\n", flag, "postgres="+pg.Host, "nonce="+id.New().String())
		var out bytes.Buffer
		_, err := bkit.Build(context.Background(), builder.Request{
			ContextDir: ctxDir, Dockerfile: []byte(df),
			Repository: "zeitwork-test/netprobe", Tag: id.New().String(), Registry: reg,
		}, &out)
		if !errors.Is(err, builder.ErrBuild) || strings.Contains(out.String(), "REACHED") {
			t.Errorf("RUN %s: err = %v\n%s", flag, err, out.String())
		}
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "REACHED ") || strings.Contains(l, "BLOCKED ") {
			t.Log(l)
		}
	}
}

// probeContext is a build context holding the probe (testdata/probe), a
// static binary: FROM scratch is enough to run it.
func probeContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	return dir
}

// TestConcurrentRunStepsCannotReachEachOther: two builds at once (two
// projects') share buildkitd's bridge; a RUN step of one must not connect to
// a RUN step of the other (the bridge's ports are isolated), while the host
// reaches both.
func TestConcurrentRunStepsCannotReachEachOther(t *testing.T) {
	bkit, reg := stack(t)
	ctxDir := probeContext(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	listening := &lineWatcher{prefix: "LISTENING ", found: make(chan string, 1)}
	done := make(chan error, 1)
	go func() {
		df := fmt.Sprintf("FROM scratch\nCOPY probe /probe\nRUN [\"/probe\", \"listen=2\", %q]\n", "nonce="+id.New().String())
		_, err := bkit.Build(ctx, builder.Request{ContextDir: ctxDir, Dockerfile: []byte(df), Repository: "zeitwork-test/netprobe", Tag: id.New().String(), Registry: reg}, listening)
		done <- err
	}()
	var peer string
	select {
	case peer = <-listening.found:
	case err := <-done:
		t.Fatalf("the listening build ended early: %v\n%s", err, listening.String())
	case <-ctx.Done():
		t.Fatal("the listening build never listened")
	}
	// The listener is up: the host reaches it (its first connection).
	c, err := net.DialTimeout("tcp", peer, 5*time.Second)
	if err != nil {
		t.Fatalf("the host cannot reach the listening RUN step at %s: %v", peer, err)
	}
	c.Close()

	df := fmt.Sprintf("FROM scratch\nCOPY probe /probe\nRUN [\"/probe\", %q, %q]\n", "peer="+peer, "nonce="+id.New().String())
	var out bytes.Buffer
	if _, err := bkit.Build(ctx, builder.Request{ContextDir: ctxDir, Dockerfile: []byte(df), Repository: "zeitwork-test/netprobe", Tag: id.New().String(), Registry: reg}, &out); err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "BLOCKED peer ") {
		t.Errorf("a RUN step reached another build's RUN step at %s:\n%s", peer, out.String())
	}
	// Its second connection lets the listening step finish.
	if c, err := net.DialTimeout("tcp", peer, 5*time.Second); err == nil {
		c.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("listening build: %v", err)
	}
}

// lineWatcher collects a build's output and sends what follows prefix on
// the first line that has it.
type lineWatcher struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	prefix string
	found  chan string
	sent   bool
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.sent {
		for _, l := range strings.Split(w.buf.String(), "\n") {
			if _, rest, ok := strings.Cut(l, w.prefix); ok && strings.Count(rest, ":") == 1 {
				w.found <- strings.TrimSpace(rest)
				w.sent = true
				break
			}
		}
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// hostAddrs are this host's IPv4 addresses other than loopback: where a
// service bound to every address answers.
func hostAddrs(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			out = append(out, n.IP.String())
		}
	}
	return out
}

func acceptAndClose(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// outsideListener puts a TCP listener on an address outside this host: a
// network namespace of the test's own, linked to the host by a veth pair
// with a /30 of TEST-NET-2 (198.51.100.0/24, not a private range), as the
// internet would be behind the host's uplink. It returns the listener's
// host:port.
func outsideListener(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("zwt-out%06x", rand.IntN(1<<24))
	n := rand.IntN(64) * 4
	hostIP, outIP := fmt.Sprintf("198.51.100.%d", n+1), fmt.Sprintf("198.51.100.%d", n+2)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("link", "add", name+"h", "type", "veth", "peer", "name", name+"o", "netns", name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name+"h").Run() })
	run("addr", "add", hostIP+"/30", "dev", name+"h")
	run("link", "set", name+"h", "up")
	run("-n", name, "addr", "add", outIP+"/30", "dev", name+"o")
	run("-n", name, "link", "set", name+"o", "up")
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "route", "add", "default", "via", hostIP)

	// A socket keeps the namespace it was made in: make it there, on a
	// thread of its own, then go back.
	ln := make(chan net.Listener, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		l, err := net.Listen("tcp", net.JoinHostPort(outIP, "0"))
		if err != nil {
			errc <- err
			return
		}
		ln <- l
	}()
	var l net.Listener
	select {
	case err := <-errc:
		t.Fatalf("listen in %s: %v", name, err)
	case l = <-ln:
	}
	t.Cleanup(func() { l.Close() })
	go acceptAndClose(l)
	return l.Addr().String()
}
