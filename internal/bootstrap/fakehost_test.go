package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
)

// fakeHost is a machine in memory whose units, when started, do what the
// real roles do to the database: the node agent registers through the
// real nodeagent.Register, with the state directory bootstrap wrote.
type fakeHost struct {
	t    *testing.T
	n    Node
	c    *Cluster
	pool *pgxpool.Pool

	mu        sync.Mutex
	files     map[string][]byte
	modes     map[string]os.FileMode
	pkgs      map[string]bool
	active    map[string]bool
	writes    int
	restarts  int
	failWrite string // the next Install of this path fails
	// failRestart: the next Restart fails (the connection drops).
	failRestart bool
	// onRestart sees each Restart before it happens.
	onRestart func(h *fakeHost, units []string)
	// beat stops the running agent's heartbeats; silent pauses them.
	beat   context.CancelFunc
	silent atomic.Bool
	// noKVM: the machine has no /dev/kvm.
	noKVM bool
	// The api's and builder's health endpoints: after each Restart they
	// refuse the first refuse asks (the process starting); unhealthy ones
	// never answer. onHealthy sees a role's first 200 after a restart.
	refuse    int
	refusing  int
	unhealthy bool
	hung      bool // refuses until the next Restart
	answered  map[string]bool
	onHealthy func(h *fakeHost, role string)
	// daemonStarts counts RestartDaemons by unit; buckets are MinIO's.
	daemonStarts map[string]int
	buckets      map[string]bool
	unpacks      int
}

func newFakeHost(t *testing.T, c *Cluster, n Node, pool *pgxpool.Pool) *fakeHost {
	h := &fakeHost{t: t, n: n, c: c, pool: pool, files: map[string][]byte{}, modes: map[string]os.FileMode{}, pkgs: map[string]bool{}, active: map[string]bool{},
		daemonStarts: map[string]int{}, buckets: map[string]bool{}}
	// What the real installers (not built yet) would have put there.
	for _, p := range []string{"/opt/kata/bin/containerd-shim-kata-v2", "/usr/local/bin/buildkitd"} {
		h.files[p] = []byte("installed by hand")
	}
	return h
}

func (h *fakeHost) SHA256s(_ context.Context, paths []string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sums := make([]string, len(paths))
	for i, p := range paths {
		if d, ok := h.files[p]; ok {
			sums[i] = digest(d)
		}
	}
	return sums, nil
}

func (h *fakeHost) Install(_ context.Context, p string, data []byte, mode os.FileMode) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failWrite == p {
		h.failWrite = ""
		return false, fmt.Errorf("%s: connection lost", h.n.Name)
	}
	if d, ok := h.files[p]; ok && digest(d) == digest(data) {
		return false, nil
	}
	h.files[p], h.modes[p] = slices.Clone(data), mode
	h.writes++
	return true, nil
}

func (h *fakeHost) Missing(_ context.Context, pkgs []string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(pkgs), func(p string) bool { return h.pkgs[p] }), nil
}

func (h *fakeHost) InstallPackages(_ context.Context, pkgs []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range pkgs {
		h.pkgs[p] = true
	}
	return nil
}

func (h *fakeHost) Stopped(_ context.Context, units []string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(units), func(u string) bool { return h.active[u] }), nil
}

func (h *fakeHost) Restart(ctx context.Context, units []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failRestart {
		h.failRestart = false
		return fmt.Errorf("%s: connection lost", h.n.Name)
	}
	if h.onRestart != nil {
		h.onRestart(h, units)
	}
	h.restarts++
	h.refusing, h.answered, h.hung = h.refuse, map[string]bool{}, false
	for _, u := range units {
		h.active[u] = true
		switch u {
		case "zeitwork-nodeagent.service":
			if err := h.startAgent(ctx); err != nil {
				return err
			}
		case "zeitwork-operator.service":
			_, err := db.New(h.pool).OperatorRegister(ctx, db.OperatorRegisterParams{ID: id.New(), Hostname: h.n.Name, Address: h.n.InternalAddress + ":8081", Version: "test"})
			if err != nil {
				return err
			}
		case "zeitwork-edge.service":
			for _, d := range h.c.Platform.Domains {
				for _, name := range []string{"wildcard_." + d, d} {
					key := "certificates/acme-v02.api.letsencrypt.org-directory/" + name + "/" + name + ".crt"
					if err := db.New(h.pool).CertificatePut(ctx, db.CertificatePutParams{Key: key, Value: []byte("cert")}); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// startAgent registers as the real agent does, from a state directory
// holding what bootstrap wrote to this machine's.
func (h *fakeHost) startAgent(ctx context.Context) error {
	state := h.t.TempDir()
	if d, ok := h.files[filepath.Join(NodeStateDir, NodeIDFile)]; ok {
		if err := os.WriteFile(filepath.Join(state, NodeIDFile), d, 0o600); err != nil {
			return err
		}
	}
	// The agent is configured by the environment file bootstrap wrote.
	env := readEnvFile(h.t, h.files["/etc/zeitwork/nodeagent.env"])
	if h.beat != nil {
		h.beat() // the old agent stops
	}
	n, err := nodeagent.Register(ctx, h.pool, netip.MustParsePrefix(env["CLUSTER_PREFIX"]), state, node.Registration{
		Hostname: h.n.Name, InternalAddress: env["NODE_INTERNAL_ADDRESS"], CPUMillis: 4000, MemoryMB: 8192, AgentVersion: "test", Labels: []byte("{}"),
	})
	if err != nil {
		return err
	}
	// It heartbeats as the real agent does, until it is restarted.
	beat, stop := context.WithCancel(context.Background())
	h.beat = stop
	h.t.Cleanup(stop)
	go func() {
		for beat.Err() == nil {
			if !h.silent.Load() {
				(node.Store{DB: h.pool}).Heartbeat(beat, n.ID, node.Observation{AvailableMemoryMB: -1, LoadMillis: -1}) //nolint:errcheck // as an agent retries
			}
			select {
			case <-beat.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	// The agent writes back the id it registered under.
	raw, err := os.ReadFile(filepath.Join(state, NodeIDFile))
	if err != nil {
		return err
	}
	h.files[filepath.Join(NodeStateDir, NodeIDFile)] = raw
	return nil
}

func (h *fakeHost) RestartDaemons(_ context.Context, units []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range units {
		h.active[u] = true
		h.daemonStarts[u]++
	}
	return nil
}

func (h *fakeHost) Exist(_ context.Context, paths []string) ([]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	exist := make([]bool, len(paths))
	for i, p := range paths {
		_, exist[i] = h.files[p]
		if p == KVMDevice {
			exist[i] = !h.noKVM
		}
	}
	return exist, nil
}

// Unpack reads the test's fake tarballs: lines of "<path> <content>".
func (h *fakeHost) Unpack(_ context.Context, p, dir string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, ok := h.files[p]
	if !ok {
		return fmt.Errorf("tar: %s: Cannot open: No such file or directory", p)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		name, content, _ := strings.Cut(line, " ")
		h.files[filepath.Join(dir, name)] = []byte(content)
	}
	delete(h.files, p)
	h.unpacks++
	return nil
}

func (h *fakeHost) Link(_ context.Context, target, link string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, ok := h.files[target]
	if !ok {
		return fmt.Errorf("link to missing %s", target)
	}
	h.files[link] = data
	return nil
}

// Bucket answers as MinIO would: only when it runs, and only to its root
// user.
func (h *fakeHost) Bucket(_ context.Context, s S3Access, create bool) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active["minio.service"] {
		if create {
			return false, errors.New("MinIO does not answer after 90s")
		}
		return false, nil
	}
	env := readEnvFile(h.t, h.files[MinIOEnv])
	if s.AccessKeyID != env["MINIO_ROOT_USER"] || s.SecretAccessKey != env["MINIO_ROOT_PASSWORD"] {
		return false, errors.New("looking up the bucket: HTTP 403")
	}
	if create {
		h.buckets[s.Bucket] = true
	}
	return h.buckets[s.Bucket], nil
}

// Get answers the api's and the builder's /v1/health as they do: only
// while their unit runs, with the version of the binary installed.
func (h *fakeHost) Get(_ context.Context, url string) (int, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	unit, role := "", ""
	switch {
	case strings.Contains(url, ":"+APIPort+"/v1/health"):
		unit, role = "zeitwork-api.service", "api"
	case strings.Contains(url, BuilderHealthAddr+"/v1/health"):
		unit, role = "zeitwork-builder.service", "builder"
	default:
		return 0, nil, fmt.Errorf("%s: nothing serves %s", h.n.Name, url)
	}
	if !h.active[unit] || h.unhealthy || h.hung || h.refusing > 0 {
		if h.refusing > 0 {
			h.refusing--
		}
		return 0, nil, fmt.Errorf("curl: (7) Failed to connect to %s: Connection refused", url)
	}
	if !h.answered[role] && h.onHealthy != nil {
		h.onHealthy(h, role)
	}
	if h.answered == nil {
		h.answered = map[string]bool{}
	}
	h.answered[role] = true
	return http.StatusOK, fmt.Appendf(nil, `{"status":"ok","version":%q}`, strings.TrimPrefix(string(h.files[BinaryPath]), "zeitwork ")), nil
}

func (h *fakeHost) Close() error { return nil }

var _ Host = (*fakeHost)(nil)
