// Package simmachine boots simulated machines on this one for the bootstrap
// tests: each is a Debian bookworm root file system (scripts/sim-rootfs.sh,
// cached) under an overlay of its own, booted by systemd-nspawn with systemd
// as its init, in a network namespace of its own with one address on a
// bridge that only the test's machines and this host are on, and reachable
// over SSH as root with a key the test holds, the host key pinned. Nothing
// else of it is handed to a test: like a rented server, it is an address,
// a port and a key.
//
// Every host resource carries the test's own random prefix (bridge, veths,
// network namespaces, overlay directories) and is removed when the test
// ends, so machines of parallel tests and a running `zeitwork dev` never
// meet.
package simmachine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/zeitwork/zeitwork/internal/sshx"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// Machine is one booted machine, as a test may use it: over SSH.
type Machine struct {
	Name    string        // also its hostname
	Addr    string        // its IPv4 address on the test's bridge
	SSHAddr string        // Addr:22
	User    string        // root
	Signer  ssh.Signer    // the key authorized for User
	KeyFile string        // that key, OpenSSH-encoded (0600), for code that reads a path
	HostKey ssh.PublicKey // what its sshd presents
	// KnownHosts is a known_hosts file (shared by the test's machines) that
	// sshx pins their keys in; Dial checks the pinned key is HostKey.
	KnownHosts string
	// BootTime is from starting systemd-nspawn to the first SSH login.
	BootTime time.Duration

	c       *Cluster
	dir     string   // its directory: root (the overlay), upper, work, console.log
	root    string   // the overlay's merged directory (the harness's own business)
	rootfs  string   // the overlay's lower directory: the cached image
	cgroups []string // its own cgroup in each hierarchy
	cmd     *exec.Cmd
	done    chan struct{}
	log     string
}

// Cluster is the machines of one test and the network between them.
type Cluster struct {
	Prefix   string     // of every host resource (e.g. "zs4k2x9q")
	Gateway  string     // this host's address on the bridge: the machines reach it there
	Subnet   *net.IPNet // the bridge's /24
	Machines []*Machine

	opts  Options
	state string // its directory in StateDir
	mu    sync.Mutex

	undo   []func() // what Close does, in reverse
	undoMu sync.Mutex
	closed sync.Once
}

// cleanup adds f to what Close undoes.
func (c *Cluster) cleanup(f func()) {
	c.undoMu.Lock()
	defer c.undoMu.Unlock()
	c.undo = append(c.undo, f)
}

// Close stops the machines and removes every trace of them and their
// network now, rather than when the test ends (which then finds nothing to
// do): a test can boot a new cluster on the same subnet afterwards
// (Options.Subnet), and what it exposed on the gateway's address answers
// again there.
func (c *Cluster) Close(t testing.TB) {
	c.closed.Do(func() {
		c.undoMu.Lock()
		undo := c.undo
		c.undoMu.Unlock()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	})
}

// Rootfs is the cached root file system, made by scripts/sim-rootfs.sh.
// Without it (or without root, systemd-nspawn or overlayfs) the test is
// skipped, or fails under CI=true.
func Rootfs(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "simulated machines", errors.New("they need root"))
	}
	for _, bin := range []string{"systemd-nspawn", "ip", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Unavailable(t, "simulated machines", fmt.Errorf("%s: %w (apt install systemd-container iproute2)", bin, err))
		}
	}
	script, err := repoFile("scripts/sim-rootfs.sh")
	if err != nil {
		testenv.Unavailable(t, "simulated machines", err)
	}
	out, err := exec.Command(script, "path").Output()
	if err != nil {
		testenv.Unavailable(t, "simulated machines", fmt.Errorf("%s path: %w", script, err))
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		testenv.Unavailable(t, "simulated machines' root file system", fmt.Errorf("%s is not made: run scripts/sim-rootfs.sh", dir))
	}
	return dir
}

// repoFile finds rel in the repository this test runs in.
func repoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s above the working directory", rel)
		}
		dir = parent
	}
}

// containerdDir is, in a machine's directory, its /var/lib/containerd.
const containerdDir = "containerd"

// Options change what machines Start boots.
type Options struct {
	// Internet lets the machines reach beyond this host (apt, a registry):
	// their traffic is masqueraded by an nft table of the test's own, and
	// they resolve names with this host's resolvers. Without it they reach
	// each other and this host only.
	Internet bool
	// Containers makes machines that can run containers themselves, like
	// a worker with containerd and runc: every capability, no system call
	// filter, their cgroups (their own subtree of each hierarchy)
	// writable, and /var/lib/containerd a directory of this host's file
	// system rather than of the overlay (a snapshotter's layers cannot
	// be on overlayfs). Such a machine's root can do much to this host; only
	// tests start them.
	Containers bool
	// Subnet, when set, is the /24 of the bridge instead of a random free
	// one, e.g. that of a closed cluster: new machines at its addresses.
	Subnet *net.IPNet
}

// Start boots n machines (in parallel) and returns once each accepts SSH.
// They are stopped and every trace of them removed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	rootfs := Rootfs(t)
	sweep(t)
	c := &Cluster{Prefix: prefix(), opts: opts}
	t.Cleanup(func() { c.Close(t) })
	if err := c.own(t); err != nil {
		t.Fatalf("simulated machines: %v", err)
	}
	if err := c.network(t); err != nil {
		t.Fatalf("simulated machines: %v", err)
	}
	keyDir := t.TempDir()
	signer, keyFile := userKey(t, keyDir)
	knownHosts := filepath.Join(keyDir, "known_hosts")
	c.Machines = make([]*Machine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		m := &Machine{
			c:          c,
			rootfs:     rootfs,
			Name:       fmt.Sprintf("%s-%d", c.Prefix, i+1),
			Addr:       hostAddr(c.Subnet, 10+i).String(),
			User:       "root",
			Signer:     signer,
			KeyFile:    keyFile,
			KnownHosts: knownHosts,
		}
		m.SSHAddr = net.JoinHostPort(m.Addr, "22")
		c.Machines[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.boot(t, m)
		}()
	}
	wg.Wait()
	// Runs before each machine's own cleanups, which then find it stopped.
	c.cleanup(func() { c.stopAll(t) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("simulated machines: %v", err)
	}
	return c
}

// prefix is the test's own: "zs" and 6 random letters, short enough for
// interface names (15 bytes) with a suffix.
func prefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte("zs")
	for range 6 {
		b = append(b, letters[mathrand.IntN(len(letters))])
	}
	return string(b)
}

// ip runs iproute2.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// network makes the test's bridge on a /24 under 10.240.0.0/12 that no
// address or route of this host overlaps.
func (c *Cluster) network(t testing.TB) error {
	// One test at a time between choosing a network and taking it.
	lock, err := os.OpenFile(filepath.Join(StateDir, ".network.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	used, err := usedNets()
	if err != nil {
		return err
	}
	if want := c.opts.Subnet; want != nil {
		if overlaps(want, used) {
			return fmt.Errorf("subnet %s is in use on this host", want)
		}
		c.Subnet = want
	}
	for range 100 {
		if c.Subnet != nil {
			break
		}
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", 240+mathrand.IntN(16), mathrand.IntN(256)))
		if overlaps(subnet, used) {
			continue
		}
		c.Subnet = subnet
		break
	}
	if c.Subnet == nil {
		return errors.New("no free /24 under 10.240.0.0/12")
	}
	gw := hostAddr(c.Subnet, 1)
	c.Gateway = gw.String()
	br := c.Prefix
	if err := ip("link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	c.cleanup(func() { _ = ip("link", "delete", br) })
	if err := ip("addr", "add", gw.String()+"/24", "dev", br); err != nil {
		return err
	}
	if err := ip("link", "set", br, "up"); err != nil {
		return err
	}
	if !c.opts.Internet {
		return nil
	}
	// A table of its own (named like the bridge), removed with it.
	rules := fmt.Sprintf(`table ip %[1]s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[2]s ip daddr != %[2]s masquerade
	}
}
`, c.Prefix, c.Subnet)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	c.cleanup(func() { _ = exec.Command("nft", "delete", "table", "ip", c.Prefix).Run() })
	return nil
}

// usedNets is every IPv4 network this host has an address or route in,
// and its resolvers (reached by the default route, perhaps in 10/8: a
// bridge on their network would cut this host's DNS off).
func usedNets() ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, ns := range nameservers() {
		nets = append(nets, &net.IPNet{IP: ns, Mask: net.CIDRMask(32, 32)})
	}
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(out)) {
			if !strings.Contains(f, "/") {
				if p := net.ParseIP(f); p != nil && p.To4() != nil {
					f += "/32"
				} else {
					continue
				}
			}
			if _, n, err := net.ParseCIDR(f); err == nil && n.IP.To4() != nil {
				ones, _ := n.Mask.Size()
				if ones > 0 { // a default route is no conflict
					nets = append(nets, n)
				}
			}
		}
	}
	return nets, nil
}

// nameservers are this host's IPv4 resolvers.
func nameservers() []net.IP {
	raw, _ := os.ReadFile("/etc/resolv.conf")
	var ips []net.IP
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			if ip := net.ParseIP(f[1]).To4(); ip != nil {
				ips = append(ips, ip)
			}
		}
	}
	return ips
}

func overlaps(n *net.IPNet, used []*net.IPNet) bool {
	for _, u := range used {
		if u.Contains(n.IP) || n.Contains(u.IP) {
			return true
		}
	}
	return false
}

func hostAddr(subnet *net.IPNet, host int) net.IP {
	a := subnet.IP.To4()
	return net.IPv4(a[0], a[1], a[2], byte(host)).To4()
}

// userKey is the key the test logs in with, and its file in dir.
func userKey(t testing.TB, dir string) (ssh.Signer, string) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "simmachine")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".pub", ssh.MarshalAuthorizedKey(s.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, p
}

// boot makes m's file system, network and container, and waits for its sshd.
func (c *Cluster) boot(t testing.TB, m *Machine) error {
	// Not t.TempDir: removed by Close, after the overlay is unmounted.
	dir, err := os.MkdirTemp("", "simmachine-"+m.Name+"-")
	if err != nil {
		return err
	}
	m.dir = dir
	c.cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("%s: %v", m.Name, err)
		}
	})
	if err := c.record(m.Name, m.dir); err != nil {
		return err
	}
	m.root = filepath.Join(m.dir, "root")
	if err := os.Mkdir(m.root, 0o755); err != nil {
		return err
	}
	if err := m.install(); err != nil {
		return err
	}
	c.cleanup(func() {
		if err := syscall.Unmount(m.root, syscall.MNT_DETACH); err != nil {
			t.Errorf("%s: unmount: %v", m.Name, err)
		}
	})

	// Its own network namespace, one veth into the bridge; the address is
	// set from here, so the machine needs no network configuration.
	ns := m.Name
	veth := c.Prefix + "h" + m.Name[len(c.Prefix)+1:] // e.g. zs4k2x9qh1
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	c.cleanup(func() { _ = ip("netns", "delete", ns) })
	if err := ip("link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", ns); err != nil {
		return err
	}
	c.cleanup(func() { _ = ip("link", "delete", veth) }) // gone with the namespace, unless that failed
	for _, args := range [][]string{
		{"link", "set", veth, "master", c.Prefix, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", m.Addr + "/24", "dev", "host0"},
		{"-n", ns, "link", "set", "host0", "up"},
		{"-n", ns, "route", "add", "default", "via", c.Gateway},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}

	// nspawn without systemd on the host (--keep-unit) puts the machine
	// in payload/ and itself in supervisor/ under its own cgroup: it gets
	// one of its own, or every machine on this host shares /payload.
	cgroups, err := makeCgroups(m.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	m.cgroups = cgroups
	c.cleanup(func() { removeCgroups(t, cgroups) }) // after stop: cleanups run last first
	c.cleanup(func() { m.stop(t) })
	return m.run()
}

// install makes the machine's disk: an empty overlay on the image (what
// was written before is gone) with this machine's identity written in.
func (m *Machine) install() error {
	upper, work := filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if m.c.opts.Containers {
		// containerd's overlayfs snapshotter cannot put its layers on an
		// overlay (the machine's root): its state gets a directory of
		// this host's own file system, as a server's /var/lib is a disk.
		d := filepath.Join(m.dir, containerdDir)
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o711); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", m.rootfs, upper, work)
	if err := syscall.Mount("overlay", m.root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("%s: overlay: %w", m.Name, err)
	}
	hostKey, err := m.personalise(m.c.opts.Internet)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	m.HostKey = hostKey
	return nil
}

// run boots the installed machine and waits until SSH lets the test in.
func (m *Machine) run() error {
	m.log = filepath.Join(m.dir, "console.log")
	logf, err := os.Create(m.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	script := ""
	for _, cg := range m.cgroups {
		script += "echo $$ > " + filepath.Join(cg, "cgroup.procs") + " && "
	}
	start := time.Now()
	m.cmd = exec.Command("sh", "-c", script+`exec "$@"`, "sh", "systemd-nspawn",
		"--quiet", "--boot",
		"--directory="+m.root,
		"--machine="+m.Name,
		"--hostname="+m.Name,
		"--network-namespace-path=/run/netns/"+m.Name,
		// No systemd on this host to register with or to make a scope.
		"--register=no", "--keep-unit",
		"--console=passive",
		"--resolv-conf=off", "--timezone=off", "--link-journal=no",
	)
	if m.c.opts.Containers {
		m.cmd.Args = append(m.cmd.Args, "--capability=all", "--bind="+filepath.Join(m.dir, containerdDir)+":/var/lib/containerd")
		m.cmd.Env = append(os.Environ(), "SYSTEMD_SECCOMP=0")
	}
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of `go test` reaches nspawn only as
	// the harness's stop (or as the death signal below).
	// If the test process dies without its cleanups, the machine powers
	// off (nspawn takes SIGTERM as that) instead of running on.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("%s: systemd-nspawn: %w", m.Name, err)
	}
	done := make(chan struct{})
	m.done = done
	cmd := m.cmd
	go func() { _ = cmd.Wait(); close(done) }()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		cl, err := m.Dial(ctx)
		if err == nil {
			cl.Close()
			m.BootTime = time.Since(start)
			if m.c.opts.Containers {
				if err := m.writableCgroups(); err != nil {
					return err
				}
				return m.writableSysctls()
			}
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s: systemd-nspawn exited (%v) before sshd answered; console:\n%s", m.Name, cmd.ProcessState, tail(m.log))
		case <-ctx.Done():
			return fmt.Errorf("%s: no SSH after 3m (%v); console:\n%s", m.Name, err, tail(m.log))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Reinstall wipes the machine as a provider's reinstall does: it is
// powered off, its disk goes back to the bare image, and it boots again at
// the same address with a new host key (pinned afresh in KnownHosts; any
// other known_hosts file still holds the old one and refuses it).
func (m *Machine) Reinstall(t testing.TB) {
	t.Helper()
	if err := m.reinstall(t); err != nil {
		t.Fatalf("reinstall: %v", err)
	}
}

func (m *Machine) reinstall(t testing.TB) error {
	m.stop(t)
	if err := syscall.Unmount(m.root, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("%s: unmount: %w", m.Name, err)
	}
	if err := m.install(); err != nil {
		return err
	}
	if err := m.unpin(); err != nil {
		return err
	}
	return m.run()
}

// unpin removes the machine's line from KnownHosts.
func (m *Machine) unpin() error {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	raw, err := os.ReadFile(m.KnownHosts)
	if err != nil {
		return err
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if host, _, _ := strings.Cut(line, " "); host != m.Addr && host != "["+m.Addr+"]:22" && line != "" {
			keep = append(keep, line)
		}
	}
	out := strings.Join(keep, "\n")
	if out != "" {
		out += "\n"
	}
	return os.WriteFile(m.KnownHosts, []byte(out), 0o600)
}

// personalise writes what makes the image this machine: hostname, machine
// id, host key, the authorized key. It returns the host's public key.
func (m *Machine) personalise(internet bool) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, m.Name)
	if err != nil {
		return nil, err
	}
	hostPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"etc/hostname", []byte(m.Name + "\n"), 0o644},
		{"etc/hosts", []byte("127.0.0.1 localhost\n" + m.Addr + " " + m.Name + "\n"), 0o644},
		{"etc/machine-id", []byte(hex.EncodeToString(id) + "\n"), 0o444},
		{"etc/ssh/ssh_host_ed25519_key", pem.EncodeToMemory(block), 0o600},
		{"etc/ssh/ssh_host_ed25519_key.pub", ssh.MarshalAuthorizedKey(hostPub), 0o644},
		// Only the key written here: sshd would otherwise look for the others.
		{"etc/ssh/sshd_config.d/zeitwork-sim-hostkey.conf", []byte("HostKey /etc/ssh/ssh_host_ed25519_key\n"), 0o644},
		{"root/.ssh/authorized_keys", ssh.MarshalAuthorizedKey(m.Signer.PublicKey()), 0o600},
	}
	if internet {
		var conf strings.Builder
		for _, ns := range nameservers() {
			fmt.Fprintf(&conf, "nameserver %s\n", ns)
		}
		files = append(files, struct {
			path string
			data []byte
			mode os.FileMode
		}{"etc/resolv.conf", []byte(conf.String()), 0o644})
	}
	for _, f := range files {
		p := filepath.Join(m.root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return nil, err
		}
	}
	return hostPub, nil
}

// Dial logs in over SSH (sshx: the host key pinned in KnownHosts) and
// checks the key pinned is the one this machine was given.
func (m *Machine) Dial(ctx context.Context) (*sshx.Client, error) {
	cl, err := sshx.Dial(ctx, m.SSHAddr, sshx.Config{User: m.User, Signer: m.Signer, KnownHosts: m.KnownHosts, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	if err := m.checkPinned(); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

func (m *Machine) checkPinned() error {
	data, err := os.ReadFile(m.KnownHosts)
	if err != nil {
		return err
	}
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(m.HostKey)))
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 2)
		if len(f) == 2 && (f[0] == m.Addr || f[0] == "["+m.Addr+"]:22") {
			if strings.TrimSpace(f[1]) != want {
				return fmt.Errorf("%s: pinned host key is not the machine's", m.Name)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: host key not pinned in %s", m.Name, m.KnownHosts)
}

// stop shuts the machine down the way a server is: nspawn passes SIGTERM
// on as SIGRTMIN+3, systemd's orderly poweroff; after 30s it is killed.
func (m *Machine) stop(t testing.TB) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		// A unit's stop can take systemd's 90s. Everything of the machine,
		// nspawn and the processes in its own PID namespace, is in its
		// cgroups.
		t.Logf("%s: no poweroff after 20s, killing it", m.Name)
		for _, cg := range m.cgroups {
			if err := killAll(cg); err != nil {
				t.Errorf("%s: %v", m.Name, err)
			}
		}
		<-m.done
	}
}

// stopAll stops the machines at once rather than one after another.
func (c *Cluster) stopAll(t testing.TB) {
	var wg sync.WaitGroup
	for _, m := range c.Machines {
		wg.Add(1)
		go func() { defer wg.Done(); m.stop(t) }()
	}
	wg.Wait()
}

// writableCgroups remounts the machine's cgroup hierarchies read-write
// (nspawn mounts the v1 controllers read-only). With its cgroup namespace,
// each shows the machine only its own subtree, zeitwork-sim/<name>.
func (m *Machine) writableCgroups() error {
	init, err := m.initPID()
	if err != nil {
		return err
	}
	// (On a cgroup v2 host there are none: nspawn mounts the machine's own
	// cgroup2 read-write.)
	script := `for d in /sys/fs/cgroup/*/; do
	  if [ ! -L "${d%/}" ] && mountpoint -q "$d"; then mount -o remount,bind,rw "$d" || exit 1; fi
	done`
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(init), "--mount", "sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: cgroups read-write: %w: %s", m.Name, err, out)
	}
	return nil
}

// hostSysctls are settings a node makes (bootstrap's sysctl.d file) that
// are this host's, not the machine's: a machine that wrote them would
// change the host. Each is a file of the machine's own instead.
var hostSysctls = []string{"fs/inotify/max_user_instances", "fs/inotify/max_user_watches", "vm/max_map_count"}

// writableSysctls lets a Containers machine set what a worker sets with
// sysctl (nspawn mounts /proc/sys read-only): /proc/sys/net is its own
// network namespace's, so it is made writable; hostSysctls are files of
// its own, starting at the host's values.
func (m *Machine) writableSysctls() error {
	init, err := m.initPID()
	if err != nil {
		return err
	}
	script := `set -e
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
mkdir -p /run/zeitwork-sim/sysctl
for k in "$@"; do
  [ -e "/proc/sys/$k" ] || continue
  f=/run/zeitwork-sim/sysctl/$(echo "$k" | tr / .)
  cat "/proc/sys/$k" > "$f"
  mount --bind "$f" "/proc/sys/$k"
done`
	args := append([]string{"--target", strconv.Itoa(init), "--mount", "sh", "-c", script, "sh"}, hostSysctls...)
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: sysctls: %w: %s", m.Name, err, out)
	}
	return nil
}

// cgroupRoots are the hierarchies a machine gets a cgroup of its own in:
// on a cgroup v1 host like this one, every hierarchy mounted under
// /sys/fs/cgroup (systemd's named one and the unified one, which nspawn
// places the machine by, and each controller's, so that the machine's
// processes are not counted with the test's and a worker can limit its
// containers); on a cgroup v2 host the root.
func cgroupRoots() []string {
	const top = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(top, "cgroup.procs")); err == nil {
		return []string{top}
	}
	entries, _ := os.ReadDir(top)
	var roots []string
	for _, e := range entries {
		d := filepath.Join(top, e.Name())
		// Combined controllers (cpu,cpuacct) are also linked as each: the
		// directory only, not its links.
		if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
				roots = append(roots, d)
			}
		}
	}
	return roots
}

// makeCgroups makes zeitwork-sim/<name> in each hierarchy.
func makeCgroups(name string) ([]string, error) {
	var dirs []string
	for _, root := range cgroupRoots() {
		parent := filepath.Join(root, "zeitwork-sim")
		d := filepath.Join(parent, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return dirs, fmt.Errorf("cgroup: %w", err)
		}
		dirs = append(dirs, d)
		// A v1 cpuset cgroup takes no process until it has CPUs and memory
		// nodes: its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(root, f)); err == nil && filepath.Base(root) == "cpuset" {
				for _, c := range []string{parent, d} {
					if err := os.WriteFile(filepath.Join(c, f), v, 0o644); err != nil {
						return dirs, fmt.Errorf("cgroup: %w", err)
					}
				}
			}
		}
	}
	if len(dirs) == 0 {
		return nil, errors.New("cgroup: no hierarchy under /sys/fs/cgroup")
	}
	return dirs, nil
}

// removeCgroups removes the machine's cgroups, deepest first, once its
// processes are gone; zeitwork-sim itself goes when no machine is left.
func removeCgroups(t testing.TB, dirs []string) {
	for _, d := range dirs {
		if err := rmTree(d); err != nil {
			t.Errorf("cgroup: %v", err)
		}
		_ = os.Remove(filepath.Dir(d)) // fails while other machines are there
	}
}

// tail is the end of a console log, for errors.
func tail(p string) string {
	data, _ := os.ReadFile(p)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Memory is what the machine's processes use, the sum of their
// proportional set sizes (shared pages divided among their users), found
// by the PID namespace of its init.
func (m *Machine) Memory() (uint64, error) {
	init, err := m.initPID()
	if err != nil {
		return 0, err
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || l != ns {
			continue
		}
		total += pss(pid)
	}
	return total, nil
}

// initPID is the machine's PID 1 as this host numbers it: nspawn's child.
func (m *Machine) initPID() (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.cmd.Process.Pid, m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: nspawn has no child", m.Name)
	}
	return strconv.Atoi(f[0])
}

func pss(pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
