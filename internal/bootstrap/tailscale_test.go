package bootstrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/testdb"
)

// tailnetHost is a fake machine with tailscaled on it: `tailscale up`
// logs it in (with the key in the file it is given) and gives it an
// address; `tailscale status --json` says so.
type tailnetHost struct {
	*fakeHost
	ip       string
	hostname string   // logged in as; "" logged out
	ups      []string // the up commands run
	keys     []string // the auth key each up read
}

func (h *tailnetHost) Shell(_ context.Context, cmd string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case strings.Contains(cmd, "systemctl restart tailscaled.service"):
		if _, ok := h.files[TailscaledPath]; !ok {
			return nil, errors.New("tailscaled: not installed")
		}
		h.active["tailscaled.service"] = true
		return nil, nil
	case strings.HasSuffix(cmd, " status --json"):
		if !h.active["tailscaled.service"] {
			return nil, errors.New("failed to connect to local tailscaled")
		}
		st := map[string]any{"BackendState": "NeedsLogin", "Self": map[string]any{"HostName": "localhost", "TailscaleIPs": nil}}
		if h.hostname != "" {
			st = map[string]any{"BackendState": "Running", "Self": map[string]any{
				"HostName": h.hostname, "DNSName": h.hostname + ".tail-test.ts.net.", "TailscaleIPs": []string{h.ip, "fd7a:115c:a1e0::" + h.ip[len("100.64.0."):]},
			}}
		}
		return json.Marshal(st)
	case strings.Contains(cmd, " up "):
		h.ups = append(h.ups, cmd)
		key := h.files[tailscaleAuthKeyPath]
		h.keys = append(h.keys, string(key))
		if strings.Contains(cmd, "rm -f "+tailscaleAuthKeyPath) {
			delete(h.files, tailscaleAuthKeyPath)
		}
		m := regexp.MustCompile(`--hostname='?([a-z0-9-]+)`).FindStringSubmatch(cmd)
		if string(key) != "tskey-auth-test" || m == nil {
			return nil, errors.New("invalid key")
		}
		h.hostname = m[1]
		return nil, nil
	}
	return nil, fmt.Errorf("fake host: unknown command %q", cmd)
}

// tailnetCluster is the example cluster with no internal addresses, on a
// tailnet, with tailscaled from release files.
func tailnetCluster(t *testing.T) (*Cluster, map[string]string) {
	t.Helper()
	c, env := testCluster(t)
	raw := regexp.MustCompile(`internal_address: [0-9.]+, `).ReplaceAll(example(t), nil)
	raw = append(raw, []byte(`
tailscale:
  auth_key_env: TS_AUTHKEY
  login_server: http://control.test:8080
`)...)
	raw = bytes.Replace(raw, []byte("release:\n"), []byte("release:\n  tailscaled: tailscaled\n  tailscale: tailscale\n"), 1)
	dir := filepath.Dir(c.Path("cluster.yaml"))
	for name, data := range map[string]string{"cluster.yaml": string(raw), "tailscaled": "tailscaled v1", "tailscale": "tailscale v1"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	prefix := c.Postgres.RoleUsers.Prefix
	c, err := Load(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Postgres.RoleUsers.Prefix = prefix
	env["TS_AUTHKEY"] = "tskey-auth-test"
	return c, env
}

// TestNodesJoinTheTailnetAndTheRolesUseItsAddresses: with tailscale set
// and no internal_address, every node is logged in once as its name with
// the auth key (never on a command line), and the roles are configured
// with, and the workers recorded under, the tailnet addresses; a second
// run changes nothing.
func TestNodesJoinTheTailnetAndTheRolesUseItsAddresses(t *testing.T) {
	c, env := tailnetCluster(t)
	hosts := map[string]*tailnetHost{}
	pool := testdb.Pool(t, env["DATABASE_URL"])
	var ips []string
	dial := func(_ context.Context, n Node) (Host, error) {
		if hosts[n.Name] == nil {
			ip := fmt.Sprintf("100.64.0.%d", len(hosts)+1)
			ips = append(ips, ip)
			hosts[n.Name] = &tailnetHost{fakeHost: newFakeHost(t, c, n, pool), ip: ip}
		}
		return hosts[n.Name], nil
	}
	runOnce := func() (Result, string) {
		t.Helper()
		var out bytes.Buffer
		b := &Bootstrap{Cluster: c, Env: env, Out: &out, Dial: dial, Wait: time.Minute, Poll: 10 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := b.Run(ctx)
		if err != nil {
			t.Fatalf("bootstrap: %v\n%s", err, out.String())
		}
		return res, out.String()
	}
	// A dry run changes nothing and says the addresses are to come.
	var dry bytes.Buffer
	b := &Bootstrap{Cluster: c, Env: env, Out: &dry, Dial: dial, DryRun: true}
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("dry run: %v\n%s", err, dry.String())
	}
	for _, want := range []string{"[todo] op-1: tailscale binaries: to write", "op-1: internal address: its tailnet address, once it has joined"} {
		if !strings.Contains(dry.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry.String())
		}
	}
	for name, h := range hosts {
		if h.writes > 0 || len(h.ups) > 0 {
			t.Errorf("the dry run changed %s", name)
		}
	}

	_, out := runOnce()
	if !strings.Contains(out, "[applied] op-1: tailnet login as op-1: running, 100.64.0.") {
		t.Errorf("first run output:\n%s", out)
	}
	for name, h := range hosts {
		if len(h.ups) != 1 || h.keys[0] != "tskey-auth-test" {
			t.Fatalf("%s: up %d times with keys %q", name, len(h.ups), h.keys)
		}
		up := h.ups[0]
		for _, want := range []string{"--hostname=" + name, "--login-server=http://control.test:8080", "--auth-key=file:" + tailscaleAuthKeyPath} {
			if !strings.Contains(up, want) {
				t.Errorf("%s: %q lacks %q", name, up, want)
			}
		}
		if strings.Contains(up, "tskey-auth-test") {
			t.Errorf("%s: the auth key is on the command line: %q", name, up)
		}
		if _, ok := h.files[tailscaleAuthKeyPath]; ok {
			t.Errorf("%s: the auth key file is left on the machine", name)
		}
		if string(h.files[TailscaledPath]) != "tailscaled v1" || !bytes.Contains(h.files[TailscaledUnitPath], []byte("ExecStart="+TailscaledPath+" ")) {
			t.Errorf("%s: tailscaled not installed from the release file", name)
		}
	}
	op := readEnvFile(t, hosts["op-1"].files["/etc/zeitwork/operator.env"])
	if op["OPERATOR_ADDR"] != hosts["op-1"].ip+":8081" {
		t.Errorf("op-1 OPERATOR_ADDR = %q, want its tailnet address %s:8081", op["OPERATOR_ADDR"], hosts["op-1"].ip)
	}
	wk := readEnvFile(t, hosts["wk-1"].files["/etc/zeitwork/nodeagent.env"])
	if wk["NODE_INTERNAL_ADDRESS"] != hosts["wk-1"].ip+":8090" {
		t.Errorf("wk-1 NODE_INTERNAL_ADDRESS = %q, want %s:8090", wk["NODE_INTERNAL_ADDRESS"], hosts["wk-1"].ip)
	}
	for _, o := range []string{"op-1", "op-2", "op-3"} {
		if !strings.Contains(wk["OPERATOR_URL"], "http://"+hosts[o].ip+":8081") {
			t.Errorf("wk-1 OPERATOR_URL = %q lacks %s's tailnet address", wk["OPERATOR_URL"], o)
		}
	}
	recorded := map[string]bool{}
	for _, n := range nodes(t, env["DATABASE_URL"]) {
		recorded[n.InternalAddress] = true
	}
	for _, w := range []string{"wk-1", "wk-2", "wk-3"} {
		if !recorded[hosts[w].ip+":8090"] {
			t.Errorf("%s is not recorded at its tailnet address; recorded: %v", w, recorded)
		}
	}

	res, out := runOnce()
	if res.Applied != 0 || !strings.Contains(out, "nothing changed") {
		t.Errorf("second run: %+v\n%s", res, out)
	}
	for name, h := range hosts {
		if len(h.ups) != 1 {
			t.Errorf("%s: logged in again on the second run", name)
		}
	}
}

func TestTailscaleFieldsAreChecked(t *testing.T) {
	base := string(example(t))
	for _, tc := range []struct{ add, want string }{
		{"tailscale:\n  auth_key_env: TS_AUTHKEY\n  login_server: headscale.example.com\n", "tailscale.login_server: \"headscale.example.com\" is not an http(s) URL"},
		{"tailscale:\n  login_server: https://headscale.example.com\n", "tailscale.auth_key_env: required"},
		{"tailscale:\n  auth_key_env: TS_AUTHKEY\n", ""},
	} {
		_, err := Parse([]byte(base + tc.add))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.add, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want %q", tc.add, err, tc.want)
		}
	}
	_, err := Parse(bytes.Replace([]byte(base), []byte("release:\n"), []byte("release:\n  tailscaled: tailscaled\n"), 1))
	if err == nil || !strings.Contains(err.Error(), "release.tailscaled: set, but there is no tailscale section") {
		t.Errorf("release.tailscaled without tailscale: %v", err)
	}
	_, err = Parse(bytes.Replace([]byte(base+"tailscale:\n  auth_key_env: TS_AUTHKEY\n"), []byte("release:\n"), []byte("release:\n  tailscaled: tailscaled\n"), 1))
	if err == nil || !strings.Contains(err.Error(), "release.tailscale: release.tailscaled and release.tailscale go together") {
		t.Errorf("release.tailscaled alone: %v", err)
	}
}

// TestTailscaledUnit: from apt or from release files, in the kernel or in
// userspace, where a userspace node keeps its SSH address as its internal
// one (nothing can bind a userspace tailnet address).
func TestTailscaledUnit(t *testing.T) {
	raw := regexp.MustCompile(`internal_address: [0-9.]+, `).ReplaceAll(example(t), nil)
	c, err := Parse(append(raw, []byte("tailscale:\n  auth_key_env: TS_AUTHKEY\n  userspace: true\n")...))
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodes[0].InternalAddress != "203.0.113.11" {
		t.Errorf("userspace: internal address %q, want the SSH address's host", c.Nodes[0].InternalAddress)
	}
	unit := string(c.TailscaledUnit())
	if !strings.Contains(unit, "ExecStart=/usr/sbin/tailscaled ") || !strings.Contains(unit, " --tun=userspace-networking\n") {
		t.Errorf("apt, userspace unit:\n%s", unit)
	}
	c.Tailscale.Userspace, c.Release.Tailscaled = false, "tailscaled"
	unit = string(c.TailscaledUnit())
	if !strings.Contains(unit, "ExecStart="+TailscaledPath+" ") || strings.Contains(unit, "userspace") {
		t.Errorf("release, kernel unit:\n%s", unit)
	}
}
