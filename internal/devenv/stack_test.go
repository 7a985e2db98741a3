package devenv_test

// These tests prove the local stack works as the platform will use it: an
// image pushed to the registry lands in MinIO and comes back intact;
// buildkitd builds a Dockerfile and pushes the result to that registry; and
// containerd pulls that image and runs it with runc, serving HTTP.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	bk "github.com/moby/buildkit/client"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tonistiigi/fsutil"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

func TestRegistryStoresImagesInMinIO(t *testing.T) {
	reg := testenv.Registry(t)
	s3 := testenv.S3(t)
	ctx := context.Background()

	repo := "zeitwork-test/random-" + id.New().String()[24:]
	ref, err := name.ParseReference(reg+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push: %v", err)
	}
	want, _ := img.Digest()

	pulled, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	got, _ := pulled.Digest()
	if got != want {
		t.Fatalf("pulled digest %s, pushed %s", got, want)
	}
	layers, _ := img.Layers()
	pulledLayers, _ := pulled.Layers()
	for i := range layers {
		a, _ := layers[i].Compressed()
		b, _ := pulledLayers[i].Compressed()
		ab, _ := io.ReadAll(a)
		bb, _ := io.ReadAll(b)
		if !bytes.Equal(ab, bb) {
			t.Fatalf("layer %d differs after a round trip", i)
		}
	}

	// The registry must be keeping the image in the bucket, not on a disk.
	mc := minioClient(t, s3)
	n := 0
	for obj := range mc.ListObjects(ctx, s3.Bucket, minio.ListObjectsOptions{
		Prefix: "registry/docker/registry/v2/repositories/" + repo + "/", Recursive: true,
	}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		n++
	}
	if n == 0 {
		t.Fatalf("no objects for %s in bucket %s: the registry is not storing into MinIO", repo, s3.Bucket)
	}
}

func minioClient(t *testing.T, s3 config.S3) *minio.Client {
	t.Helper()
	mc, err := minio.New(s3.Host(), &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKeyID, s3.SecretAccessKey.Reveal(), ""), Secure: s3.Secure()})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// helloServer is a tiny static HTTP server: the image's only file. It
// answers with $GREETING so the test knows it reached this very container.
const helloServer = `package main

import (
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(os.Getenv("GREETING")))
	})
	panic(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil))
}
`

// buildContext writes a Dockerfile and a static hello server into a
// directory: a FROM scratch image needs nothing from any public registry.
func buildContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(src, "main.go"), helloServer)
	write(t, filepath.Join(src, "go.mod"), "module hello\n\ngo 1.22\n")
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "hello"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hello server: %v\n%s", err, out)
	}
	write(t, filepath.Join(dir, "Dockerfile"), "FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\"]\n")
	return dir
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildAndPush builds dir's Dockerfile with buildkitd and pushes it as ref.
func buildAndPush(t *testing.T, addr, dir, ref string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := bk.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fsys, err := fsutil.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Solve(ctx, nil, bk.SolveOpt{
		Frontend:    "dockerfile.v0",
		LocalMounts: map[string]fsutil.FS{"context": fsys, "dockerfile": fsys},
		Exports: []bk.ExportEntry{{
			Type:  bk.ExporterImage,
			Attrs: map[string]string{"name": ref, "push": "true", "registry.insecure": "true"},
		}},
	}, nil)
	if err != nil {
		t.Fatalf("buildkit solve: %v", err)
	}
	digest := res.ExporterResponse["containerimage.digest"]
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("no image digest in the export response: %v", res.ExporterResponse)
	}
	return digest
}

func TestBuildkitBuildsAndPushesToRegistry(t *testing.T) {
	reg := testenv.Registry(t)
	bkAddr := testenv.Buildkit(t)
	ref := reg + "/zeitwork-test/hello:" + id.New().String()
	digest := buildAndPush(t, bkAddr, buildContext(t), ref)

	// The registry serves the manifest buildkitd reported.
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatalf("registry does not have %s: %v", ref, err)
	}
	if desc.Digest.String() != digest {
		t.Fatalf("registry has %s, buildkit pushed %s", desc.Digest, digest)
	}
}

func TestContainerdRunsBuiltImageWithRunc(t *testing.T) {
	reg := testenv.Registry(t)
	bkAddr := testenv.Buildkit(t)
	sock := testenv.Containerd(t)
	ref := reg + "/zeitwork-test/hello:" + id.New().String()
	buildAndPush(t, bkAddr, buildContext(t), ref)

	// A namespace of this run's own: the test never sees another's containers.
	ns := "zw-stack-" + id.New().String()[24:]
	testenv.RemoveContainerdNamespace(t, ns)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 2*time.Minute)
	defer cancel()
	c, err := client.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the cleanups below, which need it to stop the container.
	t.Cleanup(func() { c.Close() })

	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	img, err := c.Pull(ctx, ref, client.WithPullUnpack, client.WithResolver(resolver))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	t.Cleanup(func() { c.ImageService().Delete(context.WithoutCancel(ctx), img.Name()) }) //nolint:errcheck

	port := fmt.Sprint(testenv.ReservedPort(t))
	greeting := "hello from " + id.New().String()
	cid := "zw-test-" + id.New().String()
	ctr, err := c.NewContainer(ctx, cid,
		client.WithImage(img),
		client.WithNewSnapshot(cid+"-snap", img),
		client.WithRuntime("io.containerd.runc.v2", nil),
		client.WithNewSpec(oci.WithImageConfig(img),
			oci.WithEnv([]string{"PORT=" + port, "GREETING=" + greeting}),
			// The host's network namespace keeps this test about running
			// images; per-instance namespaces belong to the node agent.
			oci.WithHostNamespace(specs.NetworkNamespace)),
	)
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() { ctr.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup) }) //nolint:errcheck

	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.WithoutCancel(ctx)
		task.Kill(ctx, 9) //nolint:errcheck
		if ch, err := task.Wait(ctx); err == nil {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
			}
		}
		task.Delete(ctx) //nolint:errcheck
	})
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}

	body, err := getWithin(ctx, "http://127.0.0.1:"+port+"/")
	if err != nil {
		t.Fatalf("container never served: %v", err)
	}
	if body != greeting {
		t.Fatalf("container answered %q, want %q", body, greeting)
	}
}

// getWithin polls url until it answers 200 or ctx ends.
func getWithin(ctx context.Context, url string) (string, error) {
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return string(b), nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
