package bootstrap

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
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
	// zeitwork's own services (never their sockets, unless changed).
	Restart(ctx context.Context, units []string) error
	// RestartDaemons reloads systemd's view of the unit files, then
	// enables and (re)starts exactly these units: a daemon whose binary or
	// configuration changed.
	RestartDaemons(ctx context.Context, units []string) error
	// Exist says which paths exist (devices too, which SHA256s must not
	// read).
	Exist(ctx context.Context, paths []string) ([]bool, error)
	// Unpack extracts the tarball at p (on the host) into dir and removes it.
	Unpack(ctx context.Context, p, dir string) error
	// Link points link at target (a symbolic link, replaced if there).
	Link(ctx context.Context, target, link string) error
	// Bucket says whether the bucket exists at a MinIO the host reaches;
	// with create it first waits for MinIO to answer, then creates it.
	Bucket(ctx context.Context, s S3Access, create bool) (bool, error)
	// Get fetches url from the machine itself (a role's port on its
	// loopback or internal address, which bootstrap's own machine may not
	// reach): the HTTP status and body, or an error when nothing answers.
	Get(ctx context.Context, url string) (int, []byte, error)
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
	started := ""
	for _, u := range units {
		if strings.HasSuffix(u, ".socket") {
			// A socket is never restarted with its service: it stays open,
			// and connections wait for the new process. Its service
			// requires it, so restarting the service starts it, after the
			// service stopped (an edge from before sockets holds the
			// port until then). A socket whose unit changed is stopped
			// (its service with it) and so started anew.
			unit, last := sshx.Quote(h.at(path.Join(UnitDir, u))), sshx.Quote(h.at(socketStarted(u)))
			cmd += " && systemctl enable --quiet " + sshx.Quote(u) +
				" && { cmp -s " + unit + " " + last + " || ! systemctl is-active --quiet " + sshx.Quote(u) + " || systemctl stop " + sshx.Quote(u) + "; }"
			started += " && install -D -m 0644 " + unit + " " + last
			continue
		}
		if strings.HasPrefix(u, "zeitwork-") {
			cmd += " && systemctl enable --quiet " + sshx.Quote(u) + " && systemctl restart " + sshx.Quote(u)
			continue
		}
		// containerd and buildkitd are started, never restarted: a new
		// zeitwork binary is no reason to bounce what the instances and
		// builds run on.
		cmd += " && systemctl enable --quiet --now " + sshx.Quote(u)
	}
	_, err := h.c.Run(ctx, cmd+started, nil)
	return err
}

// socketStarted is where Restart keeps a copy of the socket unit it last
// started: a socket whose unit differs from it is started anew.
func socketStarted(unit string) string { return path.Join(path.Dir(AppliedMarker), unit) }

func (h *sshHost) RestartDaemons(ctx context.Context, units []string) error {
	cmd := "systemctl daemon-reload"
	for _, u := range units {
		cmd += " && systemctl enable --quiet " + sshx.Quote(u) + " && systemctl restart " + sshx.Quote(u)
	}
	_, err := h.c.Run(ctx, cmd, nil)
	return err
}

func (h *sshHost) Exist(ctx context.Context, paths []string) ([]bool, error) {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = sshx.Quote(h.at(p))
	}
	out, err := h.c.Run(ctx, "for p in "+strings.Join(q, " ")+`; do if [ -e "$p" ]; then echo yes; else echo no; fi; done`, nil)
	if err != nil {
		return nil, err
	}
	answers := strings.Fields(string(out))
	if len(answers) != len(paths) {
		return nil, fmt.Errorf("%s: existence query answered %d lines for %d paths", h.c.Addr(), len(answers), len(paths))
	}
	exist := make([]bool, len(paths))
	for i, a := range answers {
		exist[i] = a == "yes"
	}
	return exist, nil
}

func (h *sshHost) Unpack(ctx context.Context, p, dir string) error {
	// tar picks the decompressor (zstd, xz, gzip) from the data itself.
	_, err := h.c.Run(ctx, "mkdir -p "+sshx.Quote(h.at(dir))+" && tar -xf "+sshx.Quote(h.at(p))+" -C "+sshx.Quote(h.at(dir))+" --no-same-owner && rm -f "+sshx.Quote(h.at(p)), nil)
	return err
}

func (h *sshHost) Link(ctx context.Context, target, link string) error {
	_, err := h.c.Run(ctx, "mkdir -p "+sshx.Quote(path.Dir(h.at(link)))+" && ln -sfn "+sshx.Quote(h.at(target))+" "+sshx.Quote(h.at(link)), nil)
	return err
}

// Bucket asks MinIO with curl's SigV4 signing; the credentials go in on
// stdin (a curl config), never on a command line another user could read.
func (h *sshHost) Bucket(ctx context.Context, s S3Access, create bool) (bool, error) {
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	conf := fmt.Sprintf("user = \"%s:%s\"\n", quote.Replace(s.AccessKeyID), quote.Replace(s.SecretAccessKey))
	sigv4 := sshx.Quote("aws:amz:" + s.Region + ":s3")
	bucket := sshx.Quote(strings.TrimRight(s.Endpoint, "/") + "/" + s.Bucket)
	live := sshx.Quote(strings.TrimRight(s.Endpoint, "/") + "/minio/health/live")
	var cmd string
	if create {
		// Waits up to 90s for a MinIO just started; 409 is a bucket that
		// is already there (BucketAlreadyOwnedByYou).
		// Its journal says why it does not answer.
		cmd = "i=0; until curl -fsS --max-time 3 -o /dev/null " + live + " 2>/dev/null; do i=$((i+1)); [ $i -lt 90 ] || { echo 'MinIO does not answer after 90s:' >&2; journalctl -u minio.service -n 15 --no-pager -o cat >&2; exit 1; }; sleep 1; done; " +
			"code=$(curl -sS --max-time 10 -K - --aws-sigv4 " + sigv4 + " -X PUT -o /dev/null -w '%{http_code}' " + bucket + ") && " +
			`case $code in 200|409) echo created;; *) echo "creating the bucket: HTTP $code" >&2; exit 1;; esac`
	} else {
		cmd = "curl -fsS --max-time 3 -o /dev/null " + live + " 2>/dev/null || { echo down; exit 0; }; " +
			"code=$(curl -sS --max-time 10 -K - --aws-sigv4 " + sigv4 + " -I -o /dev/null -w '%{http_code}' " + bucket + ") && " +
			`case $code in 200) echo yes;; 404) echo no;; *) echo "looking up the bucket: HTTP $code" >&2; exit 1;; esac`
	}
	out, err := h.c.Run(ctx, cmd, strings.NewReader(conf))
	if err != nil {
		return false, err
	}
	a := strings.TrimSpace(string(out))
	return a == "yes" || a == "created", nil
}

func (h *sshHost) Get(ctx context.Context, url string) (int, []byte, error) {
	// The status on a line of its own after the body; no -f, so that a
	// 503 is an answer (with its body) and only a connection that fails is
	// an error.
	out, err := h.c.Run(ctx, "curl -sS --max-time 5 -w '\n%{http_code}' "+sshx.Quote(url), nil)
	if err != nil {
		return 0, nil, err
	}
	i := bytes.LastIndexByte(out, '\n')
	code, err := strconv.Atoi(strings.TrimSpace(string(out[i+1:])))
	if i < 0 || err != nil {
		return 0, nil, fmt.Errorf("%s: curl %s answered %q", h.c.Addr(), url, out)
	}
	return code, out[:i], nil
}

func (h *sshHost) Close() error { return h.c.Close() }
