package bootstrap_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/cli"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// TestDryRunOnSimulatedMachines runs `zeitwork bootstrap -f cluster.yaml
// --dry-run`, the command itself, against eight simulated machines (the
// example's three operators, three workers, builder and edge): each a
// booted Debian with systemd and OpenSSH, reached over SSH with the
// cluster's key. The plan probes the real machines: every one answers,
// its host key is pinned (and is the key that machine was given), and
// every machine still has everything to do. Being a dry run, it leaves
// them as they were.
func TestDryRunOnSimulatedMachines(t *testing.T) {
	names := []string{"op-1", "op-2", "op-3", "wk-1", "wk-2", "wk-3", "build-1", "edge-1"}
	sim := simmachine.Start(t, len(names))
	for _, m := range sim.Machines {
		t.Logf("%s: booted to SSH in %v", m.Name, m.BootTime.Round(10*time.Millisecond))
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	knownHosts := filepath.Join(dir, "cluster.known_hosts")
	if err := os.WriteFile(file, clusterFile(t, sim, names), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zeitwork-linux-amd64"), []byte("zeitwork v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	environ := append(os.Environ(),
		"DATABASE_URL="+testdb.Empty(t),
		"CLOUDFLARE_API_TOKEN=cf",
		"CLUSTER_TOKEN=token",
		"SECRETS_KEYS=k1:"+strings.Repeat("A", 43)+"=",
		"CERTIFICATE_KEYS=c1:"+strings.Repeat("B", 43)+"=",
		"DATABASE_ROLE_PASSWORD_KEY=role-password-key",
		"NODE_PROXY_TOKEN=proxy-token",
		"MANAGEMENT_TOKEN=management-token",
		"S3_SECRET_ACCESS_KEY=s3",
	)
	dryRun := func() string {
		t.Helper()
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		code := cli.Main(ctx, []string{"bootstrap", "-f", file, "--dry-run"}, cli.Env{Environ: environ, Stdout: &out, Stderr: &errOut})
		if code != 0 {
			t.Fatalf("zeitwork bootstrap --dry-run: exit %d\n%s\n%s", code, out.String(), errOut.String())
		}
		t.Logf("dry run over %d machines: %v", len(names), time.Since(start).Round(10*time.Millisecond))
		return out.String()
	}
	out := dryRun()
	t.Logf("plan:\n%s", out)
	for i, name := range names {
		m := sim.Machines[i]
		for _, want := range []string{
			"[ok] " + name + ": ssh root@" + m.Addr,
			"[todo] " + name + ": zeitwork binary /usr/local/bin/zeitwork: to write",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("plan lacks %q", want)
			}
		}
	}

	// Every machine pinned, with the key it was booted with.
	pinned := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(mustReadFile(t, knownHosts)), "\n") {
		host, key, _ := strings.Cut(line, " ")
		pinned[host] = key
	}
	if len(pinned) != len(names) {
		t.Errorf("known_hosts pins %d hosts, want %d", len(pinned), len(names))
	}
	for _, m := range sim.Machines {
		if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(m.HostKey))); pinned[m.Addr] != want {
			t.Errorf("%s: pinned %q, want %q", m.Name, pinned[m.Addr], want)
		}
	}

	// Nothing written: a dry run changes no machine.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, m := range sim.Machines {
		cl, err := m.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cl.Run(ctx, "ls /usr/local/bin/zeitwork /etc/zeitwork /etc/systemd/system/zeitwork-* 2>/dev/null | wc -l", nil)
		cl.Close()
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if strings.TrimSpace(string(got)) != "0" {
			t.Errorf("%s: the dry run wrote files", m.Name)
		}
	}
	for _, m := range sim.Machines {
		if mem, err := m.Memory(); err == nil {
			t.Logf("%s: %d MiB (PSS of its processes)", m.Name, mem>>20)
		}
	}
	// A second plan reaches the machines with the pins of the first.
	if again := dryRun(); !strings.Contains(again, "[ok] op-1: ssh root@"+sim.Machines[0].Addr) {
		t.Errorf("second dry run:\n%s", again)
	}
}

// clusterFile is the example cluster.yaml with the simulated machines as
// its nodes and their key as the cluster's.
func clusterFile(t *testing.T, sim *simmachine.Cluster, names []string) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/cluster.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := strings.Cut(string(raw), "\nnodes:\n")
	if !ok {
		t.Fatal("no nodes: in the example")
	}
	head = strings.Replace(head, "private_key: id_ed25519", "private_key: "+sim.Machines[0].KeyFile, 1)
	head = strings.Replace(head, "generate: true", "generate: false", 1)
	var b strings.Builder
	b.WriteString(head + "\nnodes:\n")
	roles := map[string]string{"op-1": "[operator, api]", "op-2": "[operator, api]", "op-3": "[operator]",
		"wk-1": "[worker]", "wk-2": "[worker]", "wk-3": "[worker]", "build-1": "[builder]", "edge-1": "[edge]"}
	for i, name := range names {
		fmt.Fprintf(&b, "  - {name: %s, address: %s, roles: %s}\n", name, sim.Machines[i].Addr, roles[name])
	}
	return []byte(b.String())
}

func mustReadFile(t *testing.T, p string) string {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
