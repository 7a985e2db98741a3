package builder_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bk "github.com/moby/buildkit/client"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func stack(t *testing.T) (builder.BuildKit, builder.Registry) {
	t.Helper()
	reg := testenv.Registry(t)
	return builder.BuildKit{Addr: testenv.Buildkit(t)}, builder.Registry{Host: reg, Insecure: true}
}

func dir(t *testing.T, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for p, content := range files {
		path := filepath.Join(d, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

var (
	shOnce sync.Once
	shRef  string
	shErr  error
)

// shellBase is a base image with a shell, built on this machine (no public
// registry is reachable): busybox, which acts as sh when called so.
func shellBase(t *testing.T) string {
	t.Helper()
	bkit, reg := stack(t)
	shOnce.Do(func() {
		busybox, err := os.ReadFile("/bin/busybox")
		if err != nil {
			shErr = err
			return
		}
		ctxDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(ctxDir, "busybox"), busybox, 0o755); err != nil {
			shErr = err
			return
		}
		img, err := bkit.Build(context.Background(), builder.Request{
			ContextDir: ctxDir,
			Dockerfile: []byte("FROM scratch\nCOPY busybox /bin/sh\n"),
			Repository: "zeitwork-test/busybox-sh", Tag: "1", Registry: reg,
		}, &bytes.Buffer{})
		shRef, shErr = img.Ref(), err
	})
	if shErr != nil {
		testenv.Unavailable(t, "busybox-static base image (apt install busybox-static)", shErr)
	}
	return shRef
}

func TestBuildPushesAndReusesCache(t *testing.T) {
	bkit, reg := stack(t)
	base := shellBase(t)
	project := "zeitwork-test/p-" + id.New().String()
	src := dir(t, map[string]string{
		"app.txt":    "hello",
		"Dockerfile": "ignored: the request carries the Dockerfile",
	})
	df := []byte("FROM " + base + "\nRUN echo built-" + id.New().String() + " > /built.txt\nCOPY app.txt /app.txt\n")

	var out bytes.Buffer
	ctx := context.Background()
	img, err := bkit.Build(ctx, builder.Request{ContextDir: src, Dockerfile: df, Repository: project, Tag: "d1", Registry: reg}, &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(img.Digest, "sha256:") || img.Size <= 0 || img.Ref() != reg.Host+"/"+project+":d1" {
		t.Fatalf("image = %+v", img)
	}
	if !strings.Contains(out.String(), "RUN echo built-") {
		t.Fatalf("progress output does not show the build steps:\n%s", out.String())
	}
	ref, _ := name.ParseReference(img.Ref(), name.Insecure)
	desc, err := remote.Head(ref)
	if err != nil || desc.Digest.String() != img.Digest {
		t.Fatalf("registry has %v (%v), build reported %s", desc, err, img.Digest)
	}

	// Another builder has none of this build in its local cache: prune
	// buildkitd's, so the rebuild can only hit the registry-backed cache.
	pruneLocalCache(t, bkit.Addr)
	out.Reset()
	again, err := bkit.Build(ctx, builder.Request{ContextDir: src, Dockerfile: df, Repository: project, Tag: "d2", Registry: reg}, &out)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if strings.Count(out.String(), "CACHED") < 2 {
		t.Fatalf("rebuild did not hit the cache:\n%s", out.String())
	}
	if again.Digest != img.Digest {
		t.Errorf("identical rebuild changed the digest: %s → %s", img.Digest, again.Digest)
	}
}

func pruneLocalCache(t *testing.T, addr string) {
	t.Helper()
	c, err := bk.New(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Prune(context.Background(), nil, bk.PruneAll); err != nil {
		t.Fatalf("prune buildkit cache: %v", err)
	}
}

func TestBuildHonoursGivenDockerignore(t *testing.T) {
	bkit, reg := stack(t)
	base := shellBase(t)
	src := dir(t, map[string]string{"keep.txt": "k", "secret.env": "TOKEN=x", "node_modules/x/index.js": "x"})
	df := []byte("FROM " + base + "\nCOPY . /src\nRUN test -e /src/keep.txt && test ! -e /src/secret.env && test ! -e /src/node_modules\n")
	var out bytes.Buffer
	_, err := bkit.Build(context.Background(), builder.Request{
		ContextDir: src, Dockerfile: df, DockerIgnore: []byte("*.env\nnode_modules\n"),
		Repository: "zeitwork-test/ignore-" + id.New().String(), Tag: "1", Registry: reg,
	}, &out)
	if err != nil {
		t.Fatalf("build with .dockerignore: %v\n%s", err, out.String())
	}
}

func TestBuildFailuresSayWhyAndPushNothing(t *testing.T) {
	bkit, reg := stack(t)
	base := shellBase(t)
	for _, tc := range []struct {
		name, dockerfile, want string
	}{
		{"syntax error", "FORM " + base + "\n", "unknown instruction"},
		{"failing RUN", "FROM " + base + "\nRUN echo about to fail && exit 3\n", "exit code: 3"},
		{"missing base image", "FROM " + reg.Host + "/zeitwork-test/no-such-image:1\n", "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "zeitwork-test/fail-" + id.New().String()
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, err := bkit.Build(ctx, builder.Request{
				ContextDir: dir(t, map[string]string{"a": "a"}), Dockerfile: []byte(tc.dockerfile),
				Repository: repo, Tag: "1", Registry: reg,
			}, &out)
			if !errors.Is(err, builder.ErrBuild) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBuild containing %q\n%s", err, tc.want, out.String())
			}
			ref, _ := name.ParseReference(reg.Host+"/"+repo+":1", name.Insecure)
			if _, err := remote.Head(ref); err == nil {
				t.Fatalf("a failed build pushed %s", ref)
			}
		})
	}
}
