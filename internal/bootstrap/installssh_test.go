package bootstrap

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/sshx"
	"github.com/zeitwork/zeitwork/internal/sshx/sshxtest"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func sshTestHost(t *testing.T) (Host, string) {
	t.Helper()
	srv := sshxtest.Start(t)
	cl, err := sshx.Dial(context.Background(), srv.Addr, sshx.Config{User: srv.User, Signer: srv.Signer, KnownHosts: filepath.Join(t.TempDir(), "kh"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	h := NewSSHHost(cl, root)
	t.Cleanup(func() { h.Close() })
	return h, root
}

// The MinIO bucket is looked up and created over SSH with curl's SigV4,
// against a real MinIO: a second create is no error, and a wrong secret
// is.
func TestTheBucketIsCreatedOverSSHOnce(t *testing.T) {
	mc, cfg := testenv.Bucket(t, "bootstrap")
	// The test's own bucket, removed: bootstrap makes it (and the
	// cleanup removes it again).
	if err := mc.RemoveBucket(context.Background(), cfg.Bucket); err != nil {
		t.Fatal(err)
	}
	h, _ := sshTestHost(t)
	ctx := context.Background()
	s3 := S3Access{Endpoint: cfg.Endpoint, Region: cfg.Region, Bucket: cfg.Bucket, AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey.Reveal()}
	for i, step := range []struct {
		create, want bool
	}{{false, false}, {true, true}, {false, true}, {true, true}} {
		got, err := h.Bucket(ctx, s3, step.create)
		if err != nil || got != step.want {
			t.Fatalf("step %d (create %v): %v, %v; want %v", i, step.create, got, err, step.want)
		}
	}
	if ok, err := mc.BucketExists(ctx, cfg.Bucket); err != nil || !ok {
		t.Fatalf("MinIO has no bucket %s: %v", cfg.Bucket, err)
	}
	bad := s3
	bad.SecretAccessKey = `not "the" secret\`
	if _, err := h.Bucket(ctx, bad, false); err == nil || !strings.Contains(err.Error(), "HTTP 403") || strings.Contains(err.Error(), "the\" secret") {
		t.Fatalf("a wrong secret: %v", err)
	}
	// A MinIO that does not answer is a bucket still to create.
	down := s3
	down.Endpoint = "http://" + testenv.ReservedAddr(t)
	if ok, err := h.Bucket(ctx, down, false); err != nil || ok {
		t.Fatalf("MinIO down: %v, %v", ok, err)
	}
}

// The Kata step's primitives over SSH: /dev/kvm's absence, unpacking a
// real tarball, and the shim's link.
func TestKataIsUnpackedAndLinkedOverSSH(t *testing.T) {
	h, root := sshTestHost(t)
	ctx := context.Background()
	if ok, err := h.Exist(ctx, []string{KVMDevice, "/"}); err != nil || ok[0] || !ok[1] {
		t.Fatalf("Exist(/dev/kvm, /) under an empty root = %v, %v", ok, err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for p, data := range map[string]string{"opt/kata/bin/containerd-shim-kata-v2": "#!/bin/sh\n", "opt/kata/share/defaults/kata-containers/configuration.toml": "[hypervisor.qemu]\n"} {
		tw.WriteHeader(&tar.Header{Name: "./" + p, Mode: 0o755, Size: int64(len(data)), Uid: 4242}) //nolint:errcheck // bytes.Buffer
		tw.Write([]byte(data))                                                                      //nolint:errcheck // bytes.Buffer
	}
	tw.Close()
	step := kataStep("kata", h, tb.Bytes())
	if st, err := step.Check(ctx); err != nil || st.Done {
		t.Fatalf("before: %+v %v", st, err)
	}
	if err := step.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := step.Check(ctx); err != nil || !st.Done {
		t.Fatalf("after: %+v %v", st, err)
	}
	target, err := os.Readlink(filepath.Join(root, KataShimLink))
	if err != nil || target != filepath.Join(root, KataShim) {
		t.Errorf("the shim's link points at %q (%v)", target, err)
	}
	if _, err := os.Stat(filepath.Join(root, "/var/lib/zeitwork/bootstrap/kata-release.tar")); !os.IsNotExist(err) {
		t.Errorf("the uploaded tarball was left behind: %v", err)
	}
}

// The registry bootstrap renders runs: the real distribution registry,
// started with registry.yml and registry.env as systemd would, stores
// what is pushed in the cluster's bucket, and trusts only tokens of the
// operators' token service (the real one, with the key bootstrap gives
// operators): a build's credential pushes its project, nothing anonymous
// does.
func TestTheRenderedRegistryStoresIntoTheBucketBehindTokens(t *testing.T) {
	mc, cfg := testenv.Bucket(t, "registry")
	bin := testenv.Binary(t, "registry")
	var k config.SigningKey
	if err := k.UnmarshalText([]byte(infraValues.RegistryTokenKey)); err != nil {
		t.Fatal(err)
	}
	// The token service exactly as `zeitwork operator` makes it.
	svc := &registryauth.Service{Name: RegistryService, Issuer: RegistryIssuer, Key: k.Key(), Secret: []byte(infraValues.RegistryCredentialSecret), TTL: 5 * time.Minute}
	tokens := httptest.NewServer(svc.Handler(httpapi.Server{Log: zlog.Discard()}))
	t.Cleanup(tokens.Close)
	realm := strings.Replace(tokens.URL, "127.0.0.1", "localhost", 1) + "/v1/registry/token"

	raw := regexp.MustCompile(`(?s)\ns3:\n.*?\nssh:`).ReplaceAll(infraYAML(t), fmt.Appendf(nil,
		"\ns3:\n  existing: {endpoint: %q, bucket: %s, access_key_id: %s, secret_access_key_env: S3_SECRET_ACCESS_KEY}\nssh:", cfg.Endpoint, cfg.Bucket, cfg.AccessKeyID))
	raw = regexp.MustCompile(`token_realm: \S+`).ReplaceAll(raw, []byte("token_realm: "+realm))
	c, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	values := infraValues
	values.S3SecretAccessKey = cfg.SecretAccessKey.Reveal()
	files, err := Render(c, c.Nodes[2], values)
	if err != nil {
		t.Fatal(err)
	}
	addr := testenv.ReservedAddr(t)
	dir := t.TempDir()
	var env []string
	for _, f := range files {
		switch f.Path {
		case RegistryConfig:
			data := strings.NewReplacer(c.Registry.Address, addr, RegistryTokenCert, filepath.Join(dir, "token.crt")).Replace(string(f.Data))
			if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		case RegistryTokenCert:
			if err := os.WriteFile(filepath.Join(dir, "token.crt"), f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		case RegistryEnv:
			for k, v := range readEnvFile(t, f.Data) {
				env = append(env, k+"="+v)
			}
		}
	}
	if len(env) != 3 {
		t.Fatalf("registry.env: %v", env)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck // best effort
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the registry did not come up asking for tokens: %v\n%s", err, log.String())
		}
	}
	project := uuid.New()
	push := func(auth authn.Authenticator) error {
		ref, err := name.ParseReference(addr+"/"+project.String()+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, _ := random.Image(512, 1)
		return remote.Write(ref, img, remote.WithContext(t.Context()), remote.WithAuth(auth))
	}
	var terr *transport.Error
	if err := push(authn.Anonymous); !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an anonymous push: %v", err)
	}
	principal := registryauth.ProjectPrincipal(project)
	if err := push(&authn.Basic{Username: principal, Password: svc.Mint(principal, time.Minute)}); err != nil {
		t.Fatalf("the project's push: %v\n%s", err, log.String())
	}
	var n int
	for o := range mc.ListObjects(t.Context(), cfg.Bucket, minio.ListObjectsOptions{Prefix: "registry/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
	}
	if n == 0 {
		t.Fatalf("nothing under registry/ in bucket %s", cfg.Bucket)
	}
	// The certificate is the same on every render: a second run writes
	// nothing and restarts nothing.
	again, _ := Render(c, c.Nodes[2], values)
	if fmt.Sprint(again) != fmt.Sprint(files) {
		t.Errorf("a second render differs")
	}
}

// MinIO started as minio.service starts it: from the StateDirectory a
// dynamic user gets (a symbolic link to /var/lib/private/minio), with the
// unit's HOME and the rendered environment file, it answers.
func TestTheRenderedMinIOStarts(t *testing.T) {
	bin := testenv.Binary(t, "minio")
	c, err := Parse(infraYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(c, c.Nodes[0], infraValues)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{"private/minio", "lib", "run"} {
		os.MkdirAll(filepath.Join(dir, d), 0o700) //nolint:errcheck // checked by the start
	}
	if err := os.Symlink(filepath.Join(dir, "private/minio"), filepath.Join(dir, "lib/minio")); err != nil {
		t.Fatal(err)
	}
	addr, console := testenv.ReservedAddr(t), testenv.ReservedAddr(t)
	paths := strings.NewReplacer("/var/lib/minio", filepath.Join(dir, "lib/minio"), "/run/minio", filepath.Join(dir, "run"),
		"10.0.0.11:"+MinIOPort, addr, "127.0.0.1:9001", console, MinIOPath, bin)
	var args []string
	var env []string
	for _, f := range files {
		switch f.Path {
		case MinIOEnv:
			for k, v := range readEnvFile(t, f.Data) {
				env = append(env, k+"="+v)
			}
		case filepath.Join(UnitDir, "minio.service"):
			for _, line := range strings.Split(paths.Replace(string(f.Data)), "\n") {
				if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
					args = strings.Fields(v)
				}
				if v, ok := strings.CutPrefix(line, "Environment="); ok {
					env = append(env, strings.Fields(v)...)
				}
			}
		}
	}
	if len(args) == 0 || len(env) < 3 {
		t.Fatalf("minio.service: %v %v", args, env)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited }) //nolint:errcheck // best effort
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("minio exited: %v\n%s", err, log.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/minio/health/live"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("minio does not answer:\n%s", log.String())
		}
	}
}

// Get asks a role's health endpoint from the machine over SSH with curl:
// a 200 and a 503 are answers with their bodies, a port nobody listens on
// is an error.
func TestHealthIsAskedFromTheMachineOverSSH(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down/v1/health" {
			http.Error(w, `{"status":"starting"}`, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"status":"ok","version":"v2"}`)
	}))
	defer srv.Close()
	h, _ := sshTestHost(t)
	ctx := context.Background()
	code, body, err := h.Get(ctx, srv.URL+"/v1/health")
	if err != nil || code != http.StatusOK || string(body) != `{"status":"ok","version":"v2"}` {
		t.Fatalf("Get = %d %q %v", code, body, err)
	}
	code, body, err = h.Get(ctx, srv.URL+"/down/v1/health")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(string(body), "starting") {
		t.Fatalf("Get of a 503 = %d %q %v", code, body, err)
	}
	if code, _, err := h.Get(ctx, "http://"+testenv.ReservedAddr(t)+"/v1/health"); err == nil {
		t.Fatalf("Get of a closed port = %d, no error", code)
	}
}
