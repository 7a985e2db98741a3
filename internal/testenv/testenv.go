// Package testenv finds the real dependencies that tests run against
// (Postgres, MinIO, the registry, buildkitd, containerd) at the endpoints
// scripts/deps.sh starts them on (deploy/dev/deps.env), or where the
// variables that configure the roles point. A test whose dependency is
// missing is skipped on a laptop, and fails under CI=true: CI never passes
// by skipping.
package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
)

// InCI reports whether missing dependencies must fail the run.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable ends the test because dependency dep cannot be used.
func Unavailable(t testing.TB, dep string, err error) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required (CI=true) but unavailable: %v — run scripts/deps.sh up", dep, err)
	}
	t.Skipf("%s unavailable (%v); run scripts/deps.sh up, or set CI=true to make this a failure", dep, err)
}

// Endpoints returns where the local dependencies are: deploy/dev/deps.env,
// overridden by the usual variables.
func Endpoints(t testing.TB) config.Dev {
	t.Helper()
	vars := config.Environ(os.Environ())
	if u := os.Getenv("ZEITWORK_TEST_DATABASE_URL"); u != "" {
		vars["DATABASE_URL"] = u
	}
	cfg, err := config.ParseFrom[config.Dev](devenv.Environment(vars))
	if err != nil {
		t.Fatalf("test environment: %v", err)
	}
	return cfg
}

// S3 returns the endpoints after checking that MinIO is alive.
func S3(t testing.TB) config.S3 {
	t.Helper()
	e := Endpoints(t)
	require(t, "MinIO", func(ctx context.Context) error { return devenv.MinIO(ctx, e.S3.Endpoint) })
	return e.S3
}

// Registry returns the registry's host:port after checking that it answers
// the distribution API.
func Registry(t testing.TB) string {
	t.Helper()
	e := Endpoints(t)
	require(t, "registry", func(ctx context.Context) error { return devenv.Registry(ctx, e.Registry.Addr) })
	return e.Registry.Addr
}

// Buildkit returns buildkitd's address after checking its socket accepts.
func Buildkit(t testing.TB) string {
	t.Helper()
	e := Endpoints(t)
	require(t, "buildkitd", func(ctx context.Context) error { return devenv.Dial(ctx, e.Buildkit.Addr) })
	return e.Buildkit.Addr
}

// Containerd returns containerd's socket path after checking it accepts.
func Containerd(t testing.TB) string {
	t.Helper()
	e := Endpoints(t)
	require(t, "containerd", func(ctx context.Context) error { return devenv.Dial(ctx, "unix://"+e.Containerd.Addr) })
	return e.Containerd.Addr
}

// DevPrefix returns a DEV_PREFIX of its own for an in-process `zeitwork
// dev` ("<what>" and random letters), and deletes the network and
// containerd namespaces of its first nodes when the test ends, so that test
// platforms share nothing on the host with each other or with a running
// `zeitwork dev`.
func DevPrefix(t testing.TB, what string, nodes int) string {
	t.Helper()
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	prefix := what + "-" + string(b)
	addr, db := Endpoints(t).Containerd.Addr, Endpoints(t).Database.URL.Reveal()
	t.Cleanup(func() {
		// The platform's database users (DEV_DATABASE_ROLES), best effort:
		// a platform that never ran has none.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = devenv.DropRoleUsers(ctx, db, prefix)
		for i := 1; i <= nodes; i++ {
			exec.Command("ip", "netns", "delete", devenv.NodeName(prefix, i)).Run()
			// The node's egress table on the machine, named like its namespace.
			exec.Command("nft", "delete", "table", "inet", devenv.NodeName(prefix, i)).Run()
			removeNamespaceIfThere(t, addr, devenv.NodeName(prefix, i))
		}
	})
	return prefix
}

func require(t testing.TB, dep string, probe func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := probe(ctx); err != nil {
		Unavailable(t, dep, err)
	}
}

// Binary returns the path of a server binary scripts/deps.sh built into the
// cache (registry, minio, buildkitd, buildctl), for tests that start their
// own instance with a special configuration.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("ZEITWORK_CACHE")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "zeitwork")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "bin", name+"-v*"))
	if len(matches) == 0 {
		Unavailable(t, name+" binary", fmt.Errorf("none in %s/bin (scripts/deps.sh install builds it)", dir))
	}
	return matches[len(matches)-1]
}

// DevPortBase returns a DEV_PORT_BASE for an in-process `zeitwork dev` whose
// ports (base-20 … base+span) are reserved for it until the test ends (see
// ReservedAddr): no other test, in this process or another, gets them. It
// picks below the kernel's ephemeral range (32768+), because an ephemeral
// base collides with the outgoing connections of other processes.
func DevPortBase(t testing.TB, span int) int {
	t.Helper()
	for range 50 {
		base := 12000 + rand.IntN(18000)
		if reserveRange(t, base-20, base+span) {
			return base
		}
	}
	t.Fatal("no free port range for zeitwork dev below 32768")
	return 0
}

// reserveRange reserves every port from..to until the test ends, or none.
func reserveRange(t testing.TB, from, to int) bool {
	var held []func()
	for p := from; p <= to; p++ {
		_, release, err := reserve(p)
		if err != nil {
			for _, release := range held {
				release()
			}
			return false
		}
		held = append(held, release)
	}
	for _, release := range held {
		t.Cleanup(release)
	}
	return true
}
