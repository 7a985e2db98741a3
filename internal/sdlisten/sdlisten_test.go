package sdlisten_test

import (
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/sdlisten"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestMain is also the process systemd starts: with SDLISTEN_CHILD set,
// it takes its sockets, says what it got, and exits.
func TestMain(m *testing.M) {
	if os.Getenv("SDLISTEN_CHILD") != "" {
		child()
		return
	}
	os.Exit(m.Run())
}

func child() {
	ls, err := sdlisten.Listeners()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	var got []string
	for name, l := range ls {
		got = append(got, name+"="+l.Addr().String())
	}
	slices.Sort(got)
	fmt.Println("listeners:", strings.Join(got, " "))
	fmt.Println("env:", os.Getenv("LISTEN_PID")+os.Getenv("LISTEN_FDS")+os.Getenv("LISTEN_FDNAMES"))
	// A process we start must hold none of the sockets.
	out, err := exec.Command("sh", "-c", `ls -l /proc/$$/fd | grep -c socket: || true`).Output()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("sockets in a child:", strings.TrimSpace(string(out)))
	// Still listening: a connection is accepted, on each socket in the
	// order of their names, which is the order the test connects in (in
	// the map's order, the child could wait on a socket the test has not
	// yet connected to while the test waits for its answer on the other).
	for _, name := range slices.Sorted(maps.Keys(ls)) {
		l := ls[name]
		c, err := l.Accept()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		c.Write([]byte("hello"))
		c.Close()
	}
}

// start runs the test binary as systemd would: the sockets from fd 3 on,
// LISTEN_PID set to its own pid (through sh, which execs it keeping its
// pid), LISTEN_FDS and LISTEN_FDNAMES.
func start(t *testing.T, pid string, names string, ls ...net.Listener) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `export LISTEN_PID=${PID:-$$}; exec "$0" -test.run=^$`, os.Args[0])
	cmd.Env = append(os.Environ(), "SDLISTEN_CHILD=1", "PID="+pid, fmt.Sprintf("LISTEN_FDS=%d", len(ls)), "LISTEN_FDNAMES="+names)
	for _, l := range ls {
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestListenersAreSystemdsSocketsByName(t *testing.T) {
	http, https := listen(t), listen(t)
	cmd, out := start(t, "", "http:https", http, https)
	for _, l := range []net.Listener{http, https} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
			t.Errorf("%s answered %q, %v", l.Addr(), buf, err)
		}
		c.Close()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := fmt.Sprintf("listeners: http=%s https=%s\nenv: \nsockets in a child: 0\n", http.Addr(), https.Addr())
	if out.String() != want {
		t.Errorf("child said:\n%s\nwant:\n%s", out, want)
	}
}

// Variables meant for another process (inherited through one that did not
// take them) are no sockets of ours, and are not passed on either.
func TestListenersForAnotherPIDAreNone(t *testing.T) {
	cmd, out := start(t, "1", "http", listen(t))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "listeners: \nenv: \n"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("child said:\n%s\nwant:\n%s", out, want)
	}
}

func TestListenersWithoutNamesAreUnknown(t *testing.T) {
	l := listen(t)
	cmd, out := start(t, "", "", l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "listeners: unknown=" + l.Addr().String() + "\n"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("child said:\n%s\nwant:\n%s", out, want)
	}
}

// TestListenersFromSystemdsOwnTool: systemd's code sets the variables
// (systemd-socket-activate runs a program as a socket unit would).
func TestListenersFromSystemdsOwnTool(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		testenv.Unavailable(t, "systemd-socket-activate (apt package systemd)", err)
	}
	sock := filepath.Join(t.TempDir(), "http.sock")
	// It passes the program only the environment it is told to.
	cmd := exec.Command(tool, "--listen="+sock, "--fdname=http", "--setenv=SDLISTEN_CHILD=1", os.Args[0], "-test.run=^$")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var c net.Conn
	for range 500 { // until it listens; the deadline only stops a broken test
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Errorf("answered %q, %v", buf, err)
	}
	c.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if want := "listeners: http=" + sock + "\nenv: \nsockets in a child: 0\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("child said:\n%s\nwant:\n%s", &out, want)
	}
}
