package bootstrap_test

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/cloudflare"
	"github.com/zeitwork/zeitwork/internal/dnstest"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// simHost is what a simulated cluster reaches on this host, in place of
// the internet's services: a DNS server that the Cloudflare emulator
// publishes the platform zones into, a real ACME server (Pebble) that
// validates DNS-01 through that DNS server, and a registry. Each listens on
// loopback and is exposed on the machines' bridge; the addresses here are
// the bridge ones, what the machines are given.
type simHost struct {
	CloudflareToken string
	CloudflareAPI   string // http://gateway:port/client/v4
	ACMEDirectory   string // https://gateway:port/dir
	ACMECARoots     []byte // PEM: the certificate Pebble's directory serves
	DNSResolver     string // gateway:port (UDP), the DNS server
	Registry        string // gateway:port, plain HTTP
	LocalRegistry   string // the same registry on loopback, for the test to push to
	// IssuerRoots verify what the edges serve: Pebble's issuing root.
	IssuerRoots *x509.CertPool
	// AptRepo is the packages cache (scripts/sim-rootfs.sh debs) served
	// as a flat apt repository, http://gateway:port/; "" when the
	// machines use the Debian archive.
	AptRepo string
}

// simDebs is the packages cache of scripts/sim-rootfs.sh, or "" when it is
// not made: then the machines need the internet for bootstrap's apt
// packages (under CI=true that is a failure).
func simDebs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../scripts/sim-rootfs.sh", "debs-path").Output()
	if err != nil {
		t.Fatalf("scripts/sim-rootfs.sh debs-path: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		if testenv.InCI() {
			testenv.Unavailable(t, "the simulated machines' packages cache", fmt.Errorf("%s: run scripts/sim-rootfs.sh", dir))
		}
		t.Logf("no packages cache in %s (scripts/sim-rootfs.sh makes it): the machines use the Debian archive", dir)
		return ""
	}
	return dir
}

// startSimHost starts those services for the machines of sim, with the
// platform domains as Cloudflare zones, and serves the packages cache debs
// (if any).
func startSimHost(t *testing.T, sim *simmachine.Cluster, zones []string, debs string) *simHost {
	t.Helper()
	h := &simHost{CloudflareToken: "cf-sim-token"}
	if debs != "" {
		repo := httptest.NewServer(http.FileServer(http.Dir(debs)))
		t.Cleanup(repo.Close)
		h.AptRepo = "http://" + sim.Expose(t, strings.TrimPrefix(repo.URL, "http://")) + "/"
	}
	dns := dnstest.Start(t)
	cf := cloudflare.NewEmulator(h.CloudflareToken, dns)
	for _, z := range zones {
		cf.AddZone(z)
	}
	cfSrv := httptest.NewServer(cf)
	t.Cleanup(cfSrv.Close)
	h.CloudflareAPI = "http://" + sim.Expose(t, strings.TrimPrefix(cfSrv.URL, "http://")) + "/client/v4"
	h.DNSResolver = exposeUDP(t, sim.Gateway, dns.Addr)

	wfe, roots, caPEM := startPebble(t, dns.Addr, net.ParseIP(sim.Gateway))
	h.ACMEDirectory = "https://" + sim.Expose(t, wfe) + "/dir"
	h.ACMECARoots, h.IssuerRoots = caPEM, roots

	h.LocalRegistry = startRegistry(t)
	h.Registry = sim.Expose(t, h.LocalRegistry)
	return h
}

// exposeUDP forwards datagrams from an address on the bridge to target on
// loopback, one exchange per query: the edges check DNS-01 propagation
// over UDP, which Cluster.Expose (TCP) does not carry.
func exposeUDP(t *testing.T, gateway, target string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			query := bytes.Clone(buf[:n])
			wg.Add(1)
			go func() {
				defer wg.Done()
				up, err := net.Dial("udp", target)
				if err != nil {
					return
				}
				defer up.Close()
				_ = up.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := up.Write(query); err != nil {
					return
				}
				answer := make([]byte, 65535)
				m, err := up.Read(answer)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(answer[:m], from)
			}()
		}
	}()
	return pc.LocalAddr().String()
}

// startPebble runs Pebble on loopback (its directory's certificate also
// valid for ips, where it is exposed) resolving through dnsAddr; it
// returns the directory's host:port, Pebble's issuing root and the
// directory certificate's PEM.
func startPebble(t *testing.T, dnsAddr string, ips ...net.IP) (string, *x509.CertPool, []byte) {
	t.Helper()
	bin := testenv.Binary(t, "pebble")
	dir := t.TempDir()
	certPEM := selfSignedFor(t, dir, ips)
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(certPEM)
	wfe, mgmt := testenv.ReservedAddr(t), testenv.ReservedAddr(t)
	// DNS-01 only: the ports of the other challenges are never dialled.
	unused := testenv.ReservedPort(t)
	cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": wfe, "managementListenAddress": mgmt,
		"certificate": filepath.Join(dir, "cert.pem"), "privateKey": filepath.Join(dir, "key.pem"),
		"httpPort": unused, "tlsPort": unused, "ocspResponderURL": "", "keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{"description": "sim", "validityPeriod": 7776000}},
	}})
	if err := os.WriteFile(filepath.Join(dir, "pebble.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var out testenv.Buffer
	cmd := exec.Command(bin, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble:\n%s", out.String())
		}
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust}}, Timeout: 5 * time.Second}
	get := func(u string) ([]byte, error) {
		resp, err := client.Get(u)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
		}
		return body, err
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("pebble exited:\n%s", out.String())
		default:
		}
		root, err := get("https://" + mgmt + "/roots/0")
		if err == nil {
			_, err = get("https://" + wfe + "/dir")
		}
		if err == nil {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(root) {
				t.Fatalf("pebble's root is not PEM: %q", root)
			}
			return wfe, roots, certPEM
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not ready: %v\n%s", err, out.String())
		}
	}
}

// selfSignedFor writes cert.pem and key.pem in dir, valid for loopback and
// ips, and returns the certificate's PEM.
func selfSignedFor(t *testing.T, dir string, ips []net.IP) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble (simulated cluster)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames: []string{"localhost"}, IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1)}, ips...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

// startRegistry runs scripts/deps.sh's registry binary on loopback with a
// directory of its own, without authentication, and returns its address.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := testenv.Binary(t, "registry")
	dir := t.TempDir()
	addr := testenv.ReservedAddr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s\n", dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("registry did not come up: %v\n%s", err, out.String())
		}
	}
}

// pushApp builds the node agent tests' HTTP server (GET / says which
// address it was reached on, /healthz answers 200) into a one-layer image
// and pushes it to the registry at local; it returns the digest.
func pushApp(t *testing.T, local, repo string) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), ".")
	build.Dir = "../nodeagent/testdata/app"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build app: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "app"))
	if err != nil {
		t.Fatal(err)
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bin); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/app"}, Env: []string{"PATH=/"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(local+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestSimDebsAreBootstrapsPackages holds scripts/sim-rootfs.sh's packages
// cache to what bootstrap installs on Debian: a package missing there
// would send the simulated machines to an archive they cannot reach.
func TestSimDebsAreBootstrapsPackages(t *testing.T) {
	out, err := exec.Command("../../scripts/sim-rootfs.sh", "debs-list").Output()
	if err != nil {
		t.Fatalf("scripts/sim-rootfs.sh debs-list: %v", err)
	}
	cached := strings.Fields(string(out))
	all := bootstrap.Node{Roles: []bootstrap.Role{bootstrap.RoleOperator, bootstrap.RoleWorker, bootstrap.RoleBuilder, bootstrap.RoleEdge, bootstrap.RoleAPI}}
	for _, p := range bootstrap.DistroOf(bootstrap.OSDebian).Packages(all) {
		if !slices.Contains(cached, p) {
			t.Errorf("bootstrap installs %s on Debian; scripts/sim-rootfs.sh's DEBS lacks it", p)
		}
	}
}
