package bootstrap

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/zeitwork/zeitwork/internal/sshx"
)

// Host is what bootstrap does on a machine. The SSH implementation runs
// shell commands; tests drive the steps through an in-memory one.
type Host interface {
	// SHA256s are the files' hex digests, "" for one that does not exist.
	SHA256s(ctx context.Context, paths []string) ([]string, error)
	// Install writes the file unless it already holds data, verifying the
	// checksum of what landed; it reports whether it wrote.
	Install(ctx context.Context, p string, data []byte, mode os.FileMode) (bool, error)
	// Missing are the packages that are not installed.
	Missing(ctx context.Context, pkgs []string) ([]string, error)
	InstallPackages(ctx context.Context, pkgs []string) error
	// Stopped are the systemd units that are not enabled and running.
	Stopped(ctx context.Context, units []string) ([]string, error)
	// Restart reloads systemd's view of the unit files, applies kernel
	// settings, and enables and starts the units in order, restarting
	// zeitwork's own.
	Restart(ctx context.Context, units []string) error
	Close() error
}

// sshHost is a Host over SSH. Root prefixes every path it writes or
// reads: "" on a real machine; a test's directory when the "machine" is a
// local sshd.
type sshHost struct {
	c    *sshx.Client
	root string
}

// NewSSHHost wraps an SSH connection as a Host.
func NewSSHHost(c *sshx.Client, root string) Host { return &sshHost{c: c, root: root} }

func (h *sshHost) at(p string) string { return path.Join(h.root, p) }

func (h *sshHost) SHA256s(ctx context.Context, paths []string) ([]string, error) {
	at := make([]string, len(paths))
	for i, p := range paths {
		at[i] = h.at(p)
	}
	return h.c.SHA256s(ctx, at)
}

func (h *sshHost) Install(ctx context.Context, p string, data []byte, mode os.FileMode) (bool, error) {
	return h.c.Install(ctx, h.at(p), data, mode)
}

func (h *sshHost) Missing(ctx context.Context, pkgs []string) ([]string, error) {
	if len(pkgs) == 0 {
		return nil, nil
	}
	// One line per package, in order; dpkg-query exits 1 when some are
	// unknown, which is an answer, not a failure.
	var q []string
	for _, p := range pkgs {
		q = append(q, quoteExpand(p))
	}
	out, err := h.c.Run(ctx, "for p in "+strings.Join(q, " ")+`; do if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then echo yes; else echo no; fi; done`, nil)
	if err != nil {
		return nil, err
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(pkgs) {
		return nil, fmt.Errorf("%s: package query answered %d lines for %d packages", h.c.Addr(), len(lines), len(pkgs))
	}
	var missing []string
	for i, l := range lines {
		if l != "yes" {
			missing = append(missing, pkgs[i])
		}
	}
	return missing, nil
}

// quoteExpand quotes a package name, except a $(…) in it, which the
// remote shell expands (linux-modules-extra-$(uname -r)).
func quoteExpand(p string) string {
	if i := strings.Index(p, "$("); i >= 0 {
		return `"` + p + `"`
	}
	return sshx.Quote(p)
}

func (h *sshHost) InstallPackages(ctx context.Context, pkgs []string) error {
	var q []string
	for _, p := range pkgs {
		q = append(q, quoteExpand(p))
	}
	_, err := h.c.Run(ctx, "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends "+strings.Join(q, " "), nil)
	return err
}

func (h *sshHost) Stopped(ctx context.Context, units []string) ([]string, error) {
	q := make([]string, len(units))
	for i, u := range units {
		q[i] = sshx.Quote(u)
	}
	out, err := h.c.Run(ctx, "for u in "+strings.Join(q, " ")+`; do if systemctl is-enabled --quiet "$u" && systemctl is-active --quiet "$u"; then echo yes; else echo no; fi; done`, nil)
	if err != nil {
		return nil, err
	}
	answers := strings.Fields(string(out))
	if len(answers) != len(units) {
		return nil, fmt.Errorf("%s: unit query answered %d lines for %d units", h.c.Addr(), len(answers), len(units))
	}
	var stopped []string
	for i, a := range answers {
		if a != "yes" {
			stopped = append(stopped, units[i])
		}
	}
	return stopped, nil
}

func (h *sshHost) Restart(ctx context.Context, units []string) error {
	cmd := "systemctl daemon-reload && { [ ! -e " + sshx.Quote(SysctlPath) + " ] || sysctl -q -p " + sshx.Quote(SysctlPath) + "; }"
	for _, u := range units {
		if strings.HasPrefix(u, "zeitwork-") {
			cmd += " && systemctl enable --quiet " + sshx.Quote(u) + " && systemctl restart " + sshx.Quote(u)
			continue
		}
		// containerd and buildkitd are started, never restarted: a new
		// zeitwork binary is no reason to bounce what the instances and
		// builds run on.
		cmd += " && systemctl enable --quiet --now " + sshx.Quote(u)
	}
	_, err := h.c.Run(ctx, cmd, nil)
	return err
}

func (h *sshHost) Close() error { return h.c.Close() }
