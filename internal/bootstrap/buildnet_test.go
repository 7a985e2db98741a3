package bootstrap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A build host's RUN steps may reach no machine of the cluster, on any of
// its addresses, and only the build host's units carry the policy; nft
// itself accepts the file where it is installed.
func TestBuildHostsKeepRunStepsOffTheCluster(t *testing.T) {
	c, err := Parse(example(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		files, err := Render(c, n, fakeValues)
		if err != nil {
			t.Fatal(err)
		}
		var nft, unit, toml string
		for _, f := range files {
			switch f.Path {
			case BuildkitNetFile:
				nft = string(f.Data)
			case filepath.Join(UnitDir, "buildkit.service"):
				unit = string(f.Data)
			case BuildkitConfig:
				toml = string(f.Data)
			}
		}
		if !n.Has(RoleBuilder) {
			if nft != "" || unit != "" || toml != "" {
				t.Errorf("%s runs no builds but gets buildkitd's files", n.Name)
			}
			continue
		}
		if !strings.Contains(unit, "--config "+BuildkitConfig) || !strings.Contains(unit, "ExecStartPre=/usr/sbin/nft -f "+BuildkitNetFile) ||
			!strings.Contains(toml, `networkMode = "cni"`) || !strings.Contains(toml, `cniConfigPath = "`+BuildkitCNIFile+`"`) {
			t.Errorf("%s: buildkitd does not start RUN steps in their own network:\n%s\n%s", n.Name, unit, toml)
		}
		for _, m := range c.Nodes {
			for _, a := range []string{hostOf(m.Address), hostOf(m.InternalAddress)} {
				if !strings.Contains(nft, a) {
					t.Errorf("%s: RUN steps are not kept off %s's address %s", n.Name, m.Name, a)
				}
			}
		}
		if _, err := exec.LookPath("nft"); err != nil || os.Geteuid() != 0 {
			continue // checked where nft runs as root (CI, the dev machine)
		}
		path := filepath.Join(t.TempDir(), "net.nft")
		if err := os.WriteFile(path, []byte(nft), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("nft", "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("%s: nft refuses the table: %v\n%s", n.Name, err, out)
		}
	}
}
