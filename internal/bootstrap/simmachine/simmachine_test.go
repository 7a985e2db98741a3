package simmachine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/sshx"
)

// TestMachinesBootSystemdAndAreApart boots three machines and proves, over
// SSH only, that each is a machine of its own: systemd is its PID 1 and
// reaches "running", it has its own hostname and address, a file written on
// one is on none of the others, and they reach each other over the bridge.
// Afterwards nothing of them is left on this host.
func TestMachinesBootSystemdAndAreApart(t *testing.T) {
	var c *Cluster
	t.Run("machines", func(t *testing.T) {
		c = Start(t, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		run := func(m *Machine, cmd string) string {
			t.Helper()
			cl, err := m.Dial(ctx)
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			defer cl.Close()
			out, err := cl.Run(ctx, cmd, nil)
			if err != nil {
				t.Fatalf("%s: %s: %v (%s)", m.Name, cmd, err, out)
			}
			return strings.TrimSpace(string(out))
		}
		for i, m := range c.Machines {
			// "running": every unit started, none failed (degraded would say so).
			if got := run(m, "systemctl is-system-running --wait || true"); got != "running" {
				t.Errorf("%s: is-system-running = %q; failed units: %s", m.Name, got, run(m, "systemctl --failed --no-legend --plain"))
			}
			if got := run(m, "cat /proc/1/comm"); got != "systemd" {
				t.Errorf("%s: PID 1 is %q, want systemd", m.Name, got)
			}
			if got := run(m, "systemctl is-active ssh.service"); got != "active" {
				t.Errorf("%s: ssh.service is %q", m.Name, got)
			}
			// Its own cgroup, not one every machine on the host shares.
			// (Seen from this host: the machine has a cgroup namespace.)
			init, err := m.initPID()
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", init)); !strings.Contains(string(got), "name=systemd:/zeitwork-sim/"+m.Name+"/payload") {
				t.Errorf("%s: PID 1's cgroups: %s", m.Name, got)
			}
			// SSH is all it offers.
			if got := run(m, "ss -Hltn | awk '{print $4}' | sort -u | tr '\\n' ' '"); strings.TrimSpace(strings.NewReplacer("0.0.0.0:22", "", "[::]:22", "").Replace(got)) != "" {
				t.Errorf("%s listens on more than port 22: %s", m.Name, got)
			}
			if got := run(m, "hostname"); got != m.Name {
				t.Errorf("hostname %q, want %q", got, m.Name)
			}
			if got := run(m, "ip -4 -o addr show dev host0"); !strings.Contains(got, " "+m.Addr+"/24 ") {
				t.Errorf("%s: host0 is %q, want %s", m.Name, got, m.Addr)
			}
			run(m, "echo "+m.Name+" > /root/mine")
			for j, o := range c.Machines {
				if j == i {
					continue
				}
				if got := run(o, "cat /root/mine 2>/dev/null || echo none"); got == m.Name {
					t.Errorf("%s sees the file %s wrote", o.Name, m.Name)
				}
			}
			mem, err := m.Memory()
			if err != nil {
				t.Errorf("%s: memory: %v", m.Name, err)
			}
			t.Logf("%s at %s: booted to SSH in %v; running, %d MiB (PSS of its processes)", m.Name, m.Addr, m.BootTime.Round(10*time.Millisecond), mem>>20)
			next := c.Machines[(i+1)%len(c.Machines)]
			if got := run(m, "ping -c1 -W5 "+next.Addr+" >/dev/null && echo ok"); got != "ok" {
				t.Errorf("%s cannot reach %s", m.Name, next.Name)
			}
		}
	})
	// The subtest's cleanups have run: machines, namespaces, links gone.
	if c == nil {
		return
	}
	out, _ := exec.Command("ip", "-o", "link").Output()
	if strings.Contains(string(out), c.Prefix) {
		t.Errorf("links of %s left:\n%s", c.Prefix, out)
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), c.Prefix) {
		t.Errorf("network namespaces of %s left:\n%s", c.Prefix, out)
	}
	for _, m := range c.Machines {
		if m.cmd != nil && m.cmd.ProcessState == nil {
			t.Errorf("%s: systemd-nspawn still running", m.Name)
		}
	}
	for _, root := range cgroupRoots() {
		for _, m := range c.Machines {
			if _, err := os.Stat(filepath.Join(root, "zeitwork-sim", m.Name)); err == nil {
				t.Errorf("cgroup %s/zeitwork-sim/%s left", root, m.Name)
			}
		}
	}
	mounts, _ := exec.Command("cat", "/proc/self/mountinfo").Output()
	if strings.Contains(string(mounts), c.Prefix) || strings.Contains(string(mounts), "TestMachinesBootSystemd") {
		t.Errorf("overlay mounts left")
	}
}

// TestInternetOnlyWhenAsked: a machine started with Options.Internet
// fetches from the Debian archive (what bootstrap's apt step needs), and
// one started without cannot reach beyond this host.
func TestInternetOnlyWhenAsked(t *testing.T) {
	const fetch = "curl -sS -o /dev/null -m 20 -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release 2>&1 || true"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	try := func(opts Options) string {
		t.Helper()
		m := StartWith(t, 1, opts).Machines[0]
		cl, err := m.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		out, err := cl.Run(ctx, fetch, nil)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := try(Options{Internet: true}); got != "200" {
		t.Errorf("with Internet: the Debian archive answered %q, want 200", got)
	}
	if got := try(Options{}); got == "200" {
		t.Errorf("without Internet: the Debian archive answered")
	}
}

// TestContainersRunInAMachine: a machine started with Options.Containers
// runs a container with runc (this host's, uploaded over SSH, as bootstrap
// installs a worker's) under a memory limit, which only works if the
// machine's cgroups are writable; a machine without the option cannot.
func TestContainersRunInAMachine(t *testing.T) {
	runc, err := os.ReadFile("/usr/sbin/runc")
	if err != nil {
		t.Skipf("no runc on this host to upload: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A bundle of dash and its libraries; the container prints the memory
	// limit its cgroup has.
	const bundle = `set -e; rm -rf /b; mkdir -p /b/rootfs; cd /b
for f in /bin/dash $(ldd /bin/dash | grep -o '/lib[^ ]*'); do cp --parents -L "$f" rootfs/; done
runc spec
sed -i 's|"sh"|"/bin/dash", "-c", "read l < /sys/fs/cgroup/memory/memory.limit_in_bytes; echo limit=$l"|; s|"terminal": true|"terminal": false|; s|"resources": {|"resources": {"memory": {"limit": 67108864},|' config.json
runc run c1 2>&1 || true`
	try := func(opts Options) string {
		t.Helper()
		m := StartWith(t, 1, opts).Machines[0]
		cl, err := m.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Upload(ctx, "/usr/local/sbin/runc", runc, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := cl.Run(ctx, bundle, nil)
		if err != nil {
			t.Fatalf("%s: %v: %s", m.Name, err, out)
		}
		t.Logf("%s (containers %v): %s", m.Name, opts.Containers, out)
		return strings.TrimSpace(string(out))
	}
	if got := try(Options{Containers: true}); !strings.Contains(got, "limit=67108864") {
		t.Errorf("with Containers: the container says %q, want limit=67108864", got)
	}
	if got := try(Options{}); strings.Contains(got, "limit=67108864") {
		t.Errorf("without Containers, a container ran with its limit: %q", got)
	}
}

// TestReinstallWipesTheMachine: after Reinstall the machine answers at
// the same address with a bare disk, a new machine id and a new host key,
// which a known_hosts file pinned before (as bootstrap's is) refuses.
func TestReinstallWipesTheMachine(t *testing.T) {
	m := Start(t, 1).Machines[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(cmd string) string {
		t.Helper()
		cl, err := m.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		out, err := cl.Run(ctx, cmd, nil)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return strings.TrimSpace(string(out))
	}
	theirs := filepath.Join(t.TempDir(), "cluster.known_hosts")
	dialTheirs := func() error {
		cl, err := sshx.Dial(ctx, m.SSHAddr, sshx.Config{User: m.User, Signer: m.Signer, KnownHosts: theirs})
		if err == nil {
			cl.Close()
		}
		return err
	}
	if err := dialTheirs(); err != nil {
		t.Fatal(err)
	}
	run("echo data > /root/mine")
	id, key := run("cat /etc/machine-id"), m.HostKey

	m.Reinstall(t)

	if got := run("cat /root/mine 2>/dev/null || echo gone"); got != "gone" {
		t.Errorf("a file written before the reinstall is still there: %q", got)
	}
	if got := run("cat /etc/machine-id"); got == id {
		t.Errorf("same machine id after the reinstall")
	}
	if bytes.Equal(m.HostKey.Marshal(), key.Marshal()) {
		t.Errorf("same host key after the reinstall")
	}
	if got := run("systemctl is-system-running --wait || true"); got != "running" {
		t.Errorf("after the reinstall: %q", got)
	}
	if err := dialTheirs(); !errors.Is(err, sshx.ErrHostKeyChanged) {
		t.Errorf("the old pin let the reinstalled machine in: %v", err)
	}
}

// TestExposeReachesLoopbackServices: a server on this host's loopback is
// out of the machines' reach, and reached through the address Expose gives.
func TestExposeReachesLoopbackServices(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "from-the-host") }))
	defer srv.Close()
	c := Start(t, 1)
	m := c.Machines[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fetch := func(url string) string {
		out, _ := cl.Run(ctx, "curl -s -m 5 "+url+" || echo unreachable", nil)
		return strings.TrimSpace(string(out))
	}
	if got := fetch(srv.URL); got == "from-the-host" {
		t.Errorf("the machine reached this host's loopback")
	}
	if got := fetch("http://" + c.Expose(t, srv.Listener.Addr().String())); got != "from-the-host" {
		t.Errorf("through Expose: %q", got)
	}
}

// TestSysctlsOfAContainersMachine: a worker's sysctl settings succeed in a
// Containers machine; the network ones are its own namespace's and the
// others never reach this host.
func TestSysctlsOfAContainersMachine(t *testing.T) {
	hostInotify, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	hostForward, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	if err != nil {
		t.Fatal(err)
	}
	m := StartWith(t, 1, Options{Containers: true}).Machines[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := "1 " + fmt.Sprint(12345)
	// 12345: a value no host has, so that leaking it would show.
	out, err := cl.Run(ctx, `sysctl -q -w net.ipv6.conf.all.forwarding=1 fs.inotify.max_user_instances=12345 &&
	  echo $(sysctl -n net.ipv6.conf.all.forwarding) $(sysctl -n fs.inotify.max_user_instances)`, nil)
	if err != nil {
		t.Fatalf("sysctl in the machine: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("the machine reads %q, want %q", got, want)
	}
	if now, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_instances"); !bytes.Equal(now, hostInotify) {
		t.Errorf("the host's fs.inotify.max_user_instances changed: %s -> %s", hostInotify, now)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); !bytes.Equal(now, hostForward) {
		t.Errorf("the host's net.ipv6.conf.all.forwarding changed: %s -> %s", hostForward, now)
	}
}
