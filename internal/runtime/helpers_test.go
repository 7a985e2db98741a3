package runtime_test

// Helpers shared by the runtime tests: the test image (testdata/server,
// built FROM scratch with buildkitd and pushed to the local registry, as in
// internal/devenv's stack tests), a containerd namespace per test that is
// emptied and deleted afterwards, and small waiting helpers.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/uuid"
	bk "github.com/moby/buildkit/client"
	"github.com/tonistiigi/fsutil"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

var shared struct {
	once sync.Once
	ref  string
	err  error
}

// testImage is the test server's image, built and pushed once per test
// binary. A random file in it makes its layers new to containerd on every
// run, so no test depends on what an earlier run left behind.
func testImage(t *testing.T) string {
	t.Helper()
	reg := testenv.Registry(t)
	bkAddr := testenv.Buildkit(t)
	shared.once.Do(func() { shared.ref, shared.err = buildImage(reg, bkAddr, "server") })
	if shared.err != nil {
		t.Fatalf("test image: %v", shared.err)
	}
	return shared.ref
}

// buildImage builds testdata/server into a FROM scratch image tagged
// <reg>/zeitwork-test/<name>:<random> and pushes it.
func buildImage(reg, bkAddr, name string) (string, error) {
	dir, err := os.MkdirTemp("", "zw-runtime-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	src, err := filepath.Abs("testdata/server")
	if err != nil {
		return "", err
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "server"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test server: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "build-id"), []byte(randomHex(16)), 0o644); err != nil {
		return "", err
	}
	// busybox (the static one, from busybox-static) for the hardening
	// tests' unshare, mount and fork bomb.
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("busybox for the test image (apt install busybox-static): %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), busybox, 0o755); err != nil {
		return "", err
	}
	dockerfile := "FROM scratch\nCOPY server /server\nCOPY build-id /build-id\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/server\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}

	ref := reg + "/zeitwork-test/" + name + ":" + id.New().String()
	return ref, solve(bkAddr, ref, dir)
}

// solve builds the Dockerfile in dir with buildkitd and pushes it as ref.
func solve(bkAddr, ref, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := bk.New(ctx, bkAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	fsys, err := fsutil.NewFS(dir)
	if err != nil {
		return err
	}
	_, err = c.Solve(ctx, nil, bk.SolveOpt{
		Frontend:    "dockerfile.v0",
		LocalMounts: map[string]fsutil.FS{"context": fsys, "dockerfile": fsys},
		Exports: []bk.ExportEntry{{
			Type:  bk.ExporterImage,
			Attrs: map[string]string{"name": ref, "push": "true", "registry.insecure": "true"},
		}},
	}, nil)
	if err != nil {
		return fmt.Errorf("buildkit solve: %w", err)
	}
	return nil
}

// env is one test's containerd namespace and log directory.
type env struct {
	sock   string
	ns     string
	logDir string
	reg    string
	image  string
	raw    *client.Client // for looking behind the Runtime's back
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{
		sock:   testenv.Containerd(t),
		ns:     "zw-test-" + randomHex(6),
		logDir: t.TempDir(),
	}
	e.image = testImage(t)
	e.reg = testenv.Registry(t)
	raw, err := client.New(e.sock, client.WithDefaultNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	e.raw = raw
	testenv.RemoveContainerdNamespace(t, e.ns)
	t.Cleanup(func() {
		e.raw.Close()
	})
	return e
}

func (e *env) config() runtime.Config {
	return runtime.Config{
		Address:             e.sock,
		Namespace:           e.ns,
		Owner:               "test-owner",
		LogDir:              e.logDir,
		PlainHTTPRegistries: []string{e.reg},
	}
}

// runtime opens a Runtime on the test's namespace, closed at the end of the
// test unless the test closes it first.
func (e *env) runtime(t *testing.T, mutate ...func(*runtime.Config)) *runtime.Runtime {
	t.Helper()
	cfg := e.config()
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := runtime.New(ctx, cfg)
	if err != nil {
		t.Fatalf("runtime.New: %v", err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { r.Close() }) })
	return r
}

// spec is an instance of the test image on the host network, on a port
// reserved for it.
func (e *env) spec(t *testing.T, vars map[string]string) runtime.Spec {
	t.Helper()
	return runtime.Spec{
		InstanceID:  id.New(),
		Image:       e.image,
		Env:         vars,
		Port:        testenv.ReservedPort(t),
		HostNetwork: true,
	}
}

// pullCreateStart brings an instance of s up, failing the test on any error.
func pullCreateStart(t *testing.T, r *runtime.Runtime, s runtime.Spec) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, s.InstanceID); err != nil {
		t.Fatal(err)
	}
}

func url(s runtime.Spec, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", s.Port, path)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// get fetches url once.
func get(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// getWithin polls url until it answers 200 or ctx ends.
func getWithin(ctx context.Context, url string) (string, error) {
	var last error
	for {
		body, err := get(ctx, url)
		if err == nil {
			return body, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mustGet is get within 30 s (a start on a loaded machine can be slow),
// failing the test otherwise.
func mustGet(t *testing.T, url string) string {
	t.Helper()
	body, err := getWithin(ctxFor(t, 30*time.Second), url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return body
}

// waitFor polls Status until cond holds, failing the test after timeout.
func waitFor(t *testing.T, r *runtime.Runtime, iid uuid.UUID, timeout time.Duration, cond func(runtime.Status) bool) runtime.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.Status(context.Background(), iid)
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: status %+v after %v", iid, st, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLogs returns everything the instance has logged so far.
func readLogs(t *testing.T, r *runtime.Runtime, s runtime.Spec) string {
	t.Helper()
	rc, err := r.Logs(context.Background(), s.InstanceID, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLogs waits until the instance's log contains want.
func waitLogs(t *testing.T, r *runtime.Runtime, s runtime.Spec, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := readLogs(t, r, s)
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never contained %q; it has:\n%s", want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// containerSpec is the OCI spec containerd holds for the instance.
func containerSpec(e *env, s runtime.Spec) (*oci.Spec, error) {
	ctx := namespaces.WithNamespace(context.Background(), e.ns)
	ctr, err := e.raw.LoadContainer(ctx, s.InstanceID.String())
	if err != nil {
		return nil, err
	}
	return ctr.Spec(ctx)
}
