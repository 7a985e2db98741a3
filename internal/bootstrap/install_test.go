package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
)

// fakeKata is a Kata release as fakeHost.Unpack reads it: the two files
// bootstrap checks for after unpacking.
const fakeKata = "opt/kata/bin/containerd-shim-kata-v2 the kata shim\nopt/kata/share/defaults/kata-containers/configuration.toml [hypervisor.qemu]\n"

// infraCluster is the example with every installer on: MinIO on op-1,
// the registry on op-3, BuildKit (and CNI plugins) on build-1, Kata on
// wk-1 and wk-2, the log writer alone on the workers, all from release files next to cluster.yaml, listed in a
// SHA256SUMS.
func infraCluster(t *testing.T) (*Cluster, map[string]string, string) {
	t.Helper()
	base, env := testCluster(t)
	dir := filepath.Dir(base.Path(base.Release.Binary))
	raw := infraYAML(t)
	files := map[string]string{"bin/buildkitd": "buildkitd v1", "bin/buildctl": "buildctl v1", "cni/bridge": "bridge", "cni/host-local": "host-local",
		"cni/loopback": "loopback", "bin/minio": "minio v1", "bin/registry": "registry v1", "kata-static-amd64.tar.zst": fakeKata,
		"bin/zeitwork-logwriter": "logwriter v1"}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeSums(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	c.Postgres.RoleUsers.Prefix = base.Postgres.RoleUsers.Prefix
	env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"] = "minio-root", "minio-pass$word"
	env["REGISTRY_TOKEN_KEY"], env["REGISTRY_CREDENTIAL_SECRET"] = infraValues.RegistryTokenKey, infraValues.RegistryCredentialSecret
	return c, env, dir
}

// infraYAML is the example with every installer on.
func infraYAML(t *testing.T) []byte {
	t.Helper()
	raw := string(example(t))
	raw = strings.Replace(raw, "\nnetwork:", "  registry_token_key_env: REGISTRY_TOKEN_KEY\n  registry_credential_secret_env: REGISTRY_CREDENTIAL_SECRET\n\nnetwork:", 1)
	raw = regexp.MustCompile(`(?s)\ns3:\n.*?\nssh:`).ReplaceAllString(raw, "\ns3:\n  minio: {node: op-1, bucket: zeitwork, root_user_env: MINIO_ROOT_USER, root_password_env: MINIO_ROOT_PASSWORD}\n\nssh:")
	raw = regexp.MustCompile(`(?s)\nregistry:\n.*?\nrelease:\n.*?\n\n`).ReplaceAllString(raw, `
registry:
  node: op-3
  token_realm: http://operators.zeitwork.internal:8081/v1/registry/token
release:
  binary: zeitwork-linux-amd64
  logwriter: bin/zeitwork-logwriter
  buildkitd: bin/buildkitd
  buildctl: bin/buildctl
  cni_plugins: cni
  minio: bin/minio
  registry: bin/registry
  kata: kata-static-amd64.tar.zst
  checksums: SHA256SUMS

`)
	return []byte(raw)
}

// infraValues are fakeValues with what the installers add.
var infraValues = func() Values {
	v := fakeValues
	v.S3AccessKeyID = "minio-root"
	v.RegistryTokenKey = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
	v.RegistryCredentialSecret = "registry-credential-secret"
	return v
}()

// writeSums lists every release file in dir's SHA256SUMS, as a release
// publishes it.
func writeSums(t *testing.T, dir string) {
	t.Helper()
	var sums strings.Builder
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // test
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".yaml") && filepath.Base(p) != "SHA256SUMS" {
			raw, _ := os.ReadFile(p)
			fmt.Fprintf(&sums, "%s  %s\n", digest(raw), filepath.Base(p))
		}
		return nil
	})
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// bare dials every machine, without what newFakeHost puts there "by hand".
func bare(t *testing.T, c *Cluster, env map[string]string) machines {
	m := machines{}
	dial := m.dial(t, c, env["DATABASE_URL"])
	for _, n := range c.Nodes {
		dial(context.Background(), n) //nolint:errcheck // fake
		delete(m[n.Name].files, KataShim)
		delete(m[n.Name].files, BuildkitdPath)
	}
	return m
}

func TestInstallersApplyOnceAndASecondRunChangesNothing(t *testing.T) {
	c, env, dir := infraCluster(t)
	m := bare(t, c, env)
	_, out, err := run(t, c, env, m, false)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	for _, want := range []string{
		"[ok] release files: 9 files, each matching SHA256SUMS",
		"[applied] wk-1: log writer /usr/local/bin/zeitwork-logwriter: sha256 ",
		"[done] wk-1: /dev/kvm (runtime kata): present",
		"[applied] op-1: MinIO /usr/local/bin/minio: sha256 ",
		"[applied] op-1: start minio.service: running",
		"[applied] op-1: MinIO bucket zeitwork: at http://10.0.0.11:9000",
		"[applied] op-3: registry /usr/local/bin/registry: sha256 ",
		"[applied] op-3: start registry.service: running",
		"[applied] build-1: buildkitd: 5 files as rendered",
		"[applied] build-1: start buildkit.service: running",
		"[applied] wk-1: Kata Containers kata-static-amd64.tar.zst: sha256 ",
		"[applied] wk-1: start containerd.service: running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run lacks %q:\n%s", want, out)
		}
	}
	// MinIO and the registry come before every other node: the api
	// (op-2) and the builder need them.
	if strings.Index(out, "op-3: start registry.service") > strings.Index(out, "op-2: packages") {
		t.Errorf("op-2 was set up before the registry's node:\n%s", out)
	}
	b1, w1 := m["build-1"], m["wk-1"]
	for p, want := range map[string]string{BuildkitdPath: "buildkitd v1", BuildctlPath: "buildctl v1", ReleaseCNIDir + "/bridge": "bridge"} {
		if string(b1.files[p]) != want || b1.modes[p] != 0o755 {
			t.Errorf("build-1 %s = %q %v", p, b1.files[p], b1.modes[p])
		}
	}
	if string(w1.files[KataShimLink]) != "the kata shim" || w1.unpacks != 1 || !strings.Contains(string(w1.files[ContainerdConfig]), `runtime_type = "io.containerd.kata.v2"`) {
		t.Errorf("wk-1: shim %q, %d unpacks, containerd config %q", w1.files[KataShimLink], w1.unpacks, w1.files[ContainerdConfig])
	}
	// The log writer alone lies next to the zeitwork binary on workers,
	// where the agent looks for it, and only there.
	if string(w1.files[LogWriterPath]) != "logwriter v1" || w1.modes[LogWriterPath] != 0o755 || path.Dir(LogWriterPath) != path.Dir(BinaryPath) {
		t.Errorf("wk-1 %s = %q %v", LogWriterPath, w1.files[LogWriterPath], w1.modes[LogWriterPath])
	}
	if _, ok := m["op-1"].files[LogWriterPath]; ok {
		t.Errorf("op-1, no worker, got the log writer")
	}
	if !m["op-1"].buckets["zeitwork"] {
		t.Errorf("the bucket was not created")
	}
	if m["op-1"].modes[MinIOEnv] != 0o600 || m["op-3"].modes[RegistryEnv] != 0o600 {
		t.Errorf("the daemons' secrets are not 0600")
	}
	// Every role that needs S3 or the registry is given them.
	builder := readEnvFile(t, b1.files["/etc/zeitwork/builder.env"])
	api := readEnvFile(t, m["op-2"].files["/etc/zeitwork/api.env"])
	worker := readEnvFile(t, w1.files["/etc/zeitwork/nodeagent.env"])
	for name, e := range map[string]map[string]string{"builder": builder, "api": api} {
		if e["S3_ENDPOINT"] != "http://10.0.0.11:9000" || e["S3_BUCKET"] != "zeitwork" || e["S3_ACCESS_KEY_ID"] != "minio-root" || e["S3_SECRET_ACCESS_KEY"] != "minio-pass$word" {
			t.Errorf("%s's S3: %v", name, e)
		}
	}
	for name, e := range map[string]map[string]string{"builder": builder, "worker": worker} {
		if e["REGISTRY_ADDR"] != "10.0.0.13:5000" || e["REGISTRY_INSECURE"] != "true" {
			t.Errorf("%s's registry: %v", name, e)
		}
	}
	if _, err := config.ParseFrom[config.Builder](builder); err != nil || builder["REGISTRY_CREDENTIAL_SECRET"] != "registry-credential-secret" {
		t.Errorf("builder.env: %v %v", err, builder)
	}
	// Every operator is the registry's token service.
	operator := readEnvFile(t, m["op-2"].files["/etc/zeitwork/operator.env"])
	if cfg, err := config.ParseFrom[config.Operator](operator); err != nil || !cfg.RegistryTokenKey.Set() || cfg.RegistryAuth.CredentialSecret.Reveal() != "registry-credential-secret" {
		t.Errorf("operator.env: %v", err)
	}
	if !strings.Contains(string(m["op-3"].files[RegistryConfig]), "rootcertbundle: "+RegistryTokenCert) || m["op-3"].files[RegistryTokenCert] == nil {
		t.Errorf("the registry does not trust the token key")
	}

	writes := map[string]int{}
	for name, h := range m {
		writes[name] = h.writes
	}
	res, out, err := run(t, c, env, m, false)
	if err != nil || res.Applied != 0 || !strings.Contains(out, "[done] build-1: start buildkit.service: running") {
		t.Fatalf("second run: %v %+v\n%s", err, res, out)
	}
	for name, h := range m {
		if h.writes != writes[name] {
			t.Errorf("the second run wrote to %s", name)
		}
	}

	// A new buildkitd restarts buildkitd, and nothing else's daemon; a new
	// zeitwork binary restarts no daemon at all.
	if err := os.WriteFile(filepath.Join(dir, "bin/buildkitd"), []byte("buildkitd v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zeitwork-linux-amd64"), []byte("zeitwork v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeSums(t, dir)
	if _, out, err := run(t, c, env, m, false); err != nil || !strings.Contains(out, "[apply] build-1: start buildkit.service: its binary or configuration changed: to restart") {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	starts := map[string]int{"build-1": b1.daemonStarts["buildkit.service"], "op-1": m["op-1"].daemonStarts["minio.service"],
		"op-3": m["op-3"].daemonStarts["registry.service"], "wk-1": w1.daemonStarts["containerd.service"]}
	if fmt.Sprint(starts) != "map[build-1:2 op-1:1 op-3:1 wk-1:1]" || w1.unpacks != 1 {
		t.Errorf("daemon (re)starts %v, kata unpacked %d times", starts, w1.unpacks)
	}
}

func TestAChecksumMismatchIsRefusedBeforeAnythingChanges(t *testing.T) {
	c, env, dir := infraCluster(t)
	// The file changed after SHA256SUMS was written: a corrupted or
	// substituted download.
	if err := os.WriteFile(filepath.Join(dir, "bin/buildkitd"), []byte("buildkitd, tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := bare(t, c, env)
	_, out, err := run(t, c, env, m, false)
	if !errors.Is(err, ErrPreflight) || !regexp.MustCompile(`\[failed\] release files: release.buildkitd: \S+/bin/buildkitd has sha256 [0-9a-f]{16}, but SHA256SUMS says [0-9a-f]{16}: refusing to install it`).MatchString(out) {
		t.Fatalf("%v\n%s", err, out)
	}
	for name, h := range m {
		if h.writes > 0 {
			t.Errorf("%s was changed", name)
		}
	}
	// A file the list does not name is refused too.
	writeSums(t, dir)
	sums, _ := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	os.WriteFile(filepath.Join(dir, "SHA256SUMS"), regexp.MustCompile(`(?m)^.*  minio\n`).ReplaceAll(sums, nil), 0o644) //nolint:errcheck // test
	if _, out, err := run(t, c, env, m, true); !errors.Is(err, ErrPreflight) || !strings.Contains(out, "release.minio: minio is not listed in SHA256SUMS") {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestAKataWorkerWithoutKVMStopsAtItsFirstStep(t *testing.T) {
	c, env, _ := infraCluster(t)
	m := bare(t, c, env)
	m["wk-2"].noKVM = true
	want := "wk-2: /dev/kvm (runtime kata): /dev/kvm is missing: Kata Containers runs each instance in a virtual machine and needs KVM; " +
		"enable hardware virtualization (nested virtualization on a cloud VM) and load kvm_intel or kvm_amd, or set nodes[4].runtime: runc"
	// The plan says so ...
	if _, out, err := run(t, c, env, m, true); err != nil || !strings.Contains(out, "[todo] "+want) {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	// ... and the run stops there, wk-2 untouched.
	_, out, err := run(t, c, env, m, false)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(out, "[done] wk-1: /dev/kvm (runtime kata): present") {
		t.Fatalf("%v\n%s", err, out)
	}
	if m["wk-2"].writes > 0 || len(m["wk-2"].pkgs) > 0 || m["wk-3"].writes > 0 {
		t.Errorf("wk-2 or a later node was changed")
	}
}

func TestAKataReleaseWithoutTheShimIsRefused(t *testing.T) {
	c, env, dir := infraCluster(t)
	os.WriteFile(filepath.Join(dir, "kata-static-amd64.tar.zst"), []byte("opt/kata/README something else\n"), 0o644) //nolint:errcheck // test
	writeSums(t, dir)
	m := bare(t, c, env)
	_, out, err := run(t, c, env, m, false)
	if err == nil || !strings.Contains(out, "[failed] wk-1: Kata Containers kata-static-amd64.tar.zst: the Kata release has no /opt/kata/bin/containerd-shim-kata-v2") {
		t.Fatalf("%v\n%s", err, out)
	}
	if m["wk-1"].files[KataRelease] != nil {
		t.Errorf("the release is recorded as unpacked")
	}
}
