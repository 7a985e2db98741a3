package registryauth_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func newService(t *testing.T) *registryauth.Service {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	return &registryauth.Service{Name: "zeitwork-registry", Issuer: "zeitwork", Key: key, Secret: secret, TTL: 5 * time.Minute}
}

// tokenRegistry starts a real distribution registry that trusts only
// tokens from svc, and returns its host:port.
func tokenRegistry(t *testing.T, svc *registryauth.Service) string {
	t.Helper()
	return tokenRegistryAt(t, svc, "")
}

// tokenRegistryAt starts it on addr ("" for any free port).
func tokenRegistryAt(t *testing.T, svc *registryauth.Service, addr string) string {
	t.Helper()
	bin := testenv.Binary(t, "registry")
	tokens := httptest.NewServer(svc.Handler(httpapi.Server{Log: zlog.Discard()}))
	t.Cleanup(tokens.Close)

	// Clients refuse a token realm that is a private IP literal (a registry
	// must not steer them at internal services); a host name is fine.
	dir := t.TempDir()
	cert, err := svc.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "token.crt"), cert, 0o644)
	if addr == "" {
		addr = testenv.ReservedAddr(t)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s/data
  delete:
    enabled: true
http:
  addr: %s
auth:
  token:
    realm: %s/v1/registry/token
    service: zeitwork-registry
    issuer: zeitwork
    rootcertbundle: %s/token.crt
`, dir, addr, strings.Replace(tokens.URL, "127.0.0.1", "localhost", 1), dir)
	os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o644)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	out, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return addr
			}
		}
		if time.Since(start) > 10*time.Second {
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("token-auth registry did not come up: %v\n%s", err, log)
		}
	}
}

func push(addr, repo, user, pass string) error {
	ref, err := name.ParseReference(addr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		return err
	}
	img, _ := random.Image(512, 1)
	return remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
}

func pull(addr, repo, user, pass string) error {
	return pullRef(addr+"/"+repo+":v1", user, pass)
}

func pullRef(ref, user, pass string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	_, err = remote.Image(r, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	return err
}

func denied(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden)
}

// TestBuildCredentialsReachOnlyTheirProject runs the real registry with
// token auth: a build's credentials push and pull its own project's
// repository and nothing else.
func TestBuildCredentialsReachOnlyTheirProject(t *testing.T) {
	svc := newService(t)
	addr := tokenRegistry(t, svc)
	a, b := id.New(), id.New()
	pa, pb := registryauth.ProjectPrincipal(a), registryauth.ProjectPrincipal(b)
	credA, credB := svc.Mint(pa, time.Hour), svc.Mint(pb, time.Hour)
	admin := svc.Mint(registryauth.Admin, time.Hour)

	if err := push(addr, a.String(), pa, credA); err != nil {
		t.Fatalf("project A's build cannot push its own image: %v", err)
	}
	if err := push(addr, b.String(), pb, credB); err != nil {
		t.Fatal(err)
	}
	if err := push(addr, "base/busybox", registryauth.Admin, admin); err != nil {
		t.Fatal(err)
	}
	if err := pull(addr, a.String(), pa, credA); err != nil {
		t.Fatalf("project A cannot pull its own image: %v", err)
	}
	if err := pull(addr, "base/busybox", pa, credA); err != nil {
		t.Fatalf("project A cannot pull a base image: %v", err)
	}
	if err := pull(addr, b.String(), pa, credA); !denied(err) {
		t.Fatalf("project A pulled project B's image: %v", err)
	}
	if err := push(addr, b.String(), pa, credA); !denied(err) {
		t.Fatalf("project A overwrote project B's image: %v", err)
	}
	if err := push(addr, "base/busybox", pa, credA); !denied(err) {
		t.Fatalf("a build overwrote a base image: %v", err)
	}

	puller := svc.Mint(registryauth.Puller, time.Hour)
	if err := pull(addr, b.String(), registryauth.Puller, puller); err != nil {
		t.Fatalf("a node cannot pull: %v", err)
	}
	if err := push(addr, b.String(), registryauth.Puller, puller); !denied(err) {
		t.Fatalf("a node pushed: %v", err)
	}
	if err := pull(addr, a.String(), "", ""); !denied(err) {
		t.Fatalf("anonymous pull: %v", err)
	}
	if err := pull(addr, a.String(), pa, credB); !denied(err) {
		t.Fatalf("project A's name with B's password: %v", err)
	}
}

// buildkitTokenRegistry is where the buildkitd of scripts/deps.sh expects
// this test's registry (deploy/dev/buildkitd.toml.tmpl: plain HTTP).
const buildkitTokenRegistry = "127.0.0.1:25002"

// TestBuildPushesWithProjectScopedCredentials: a build through BuildKit,
// given only its project's credentials, pushes its image and its cache,
// and cannot read another project's image as a base.
func TestBuildPushesWithProjectScopedCredentials(t *testing.T) {
	svc := newService(t)
	bkAddr := testenv.Buildkit(t)
	addr := tokenRegistryAt(t, svc, buildkitTokenRegistry)
	a, b := id.New(), id.New()
	pb := registryauth.ProjectPrincipal(b)
	if err := pushScratch(t, addr, b.String(), pb, svc.Mint(pb, time.Hour)); err != nil {
		t.Fatal(err)
	}
	pa := registryauth.ProjectPrincipal(a)
	reg := builder.Registry{Host: addr, Insecure: true, Username: pa, Password: svc.Mint(pa, time.Hour)}
	kit := builder.BuildKit{Addr: bkAddr}
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello"), 0o644)

	var out bytes.Buffer
	img, err := kit.Build(ctx, builder.Request{ContextDir: dir, Dockerfile: []byte("FROM scratch\nCOPY hello.txt /\n"), Repository: a.String(), Tag: "d1", Registry: reg}, &out)
	if err != nil {
		t.Fatalf("build with project A's credentials: %v\n%s", err, out.String())
	}
	if err := pullRef(addr+"/"+a.String()+"@"+img.Digest, pa, reg.Password); err != nil {
		t.Fatalf("pushed image not readable by its project: %v", err)
	}

	// Another project's image as a base: the build's credentials cannot read it.
	out.Reset()
	_, err = kit.Build(ctx, builder.Request{ContextDir: dir, Dockerfile: []byte("FROM " + addr + "/" + b.String() + ":v1\n"), Repository: a.String(), Tag: "d2", Registry: reg}, &out)
	if !errors.Is(err, builder.ErrBuild) {
		t.Fatalf("building FROM project B's image with A's credentials: %v", err)
	}
	// Nor can it push into another project's repository.
	_, err = kit.Build(ctx, builder.Request{ContextDir: dir, Dockerfile: []byte("FROM scratch\nCOPY hello.txt /\n"), Repository: b.String(), Tag: "evil", Registry: reg}, &out)
	if err == nil {
		t.Fatal("project A's build pushed into project B's repository")
	}
}

// pushScratch pushes a one-file image built in memory.
func pushScratch(t *testing.T, addr, repo, user, pass string) error {
	t.Helper()
	return push(addr, repo, user, pass)
}
