package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/zeitwork/zeitwork/internal/sshx"
)

// Tailscale on a node. Bootstrap installs tailscaled and its CLI (from the
// release.tailscaled and release.tailscale files, checksum-verified like
// the zeitwork binary, or else Tailscale's apt package), writes its own
// tailscaled unit, and logs the node in with the auth key as its name. A
// node is done when `tailscale status --json` says it runs, logged in as
// that name: a second run changes nothing, and a machine that was wiped
// joins again.
//
// Why the node's internal address becomes its tailnet IPv4 address when
// cluster.yaml gives none: the roles bind and advertise it
// (OPERATOR_ADDR, NODE_INTERNAL_ADDRESS), which needs an address, not a
// name; the builders' RUN-step firewall keeps builds off the cluster's
// nodes by address (clusterAddrs); and it needs no resolver, where a
// MagicDNS name needs tailscaled's. It is stable for as long as the node
// keeps its Tailscale state; a reinstalled machine joins as a new node
// with a new address, so a cluster that must recover wiped workers by
// their identity gives internal_address explicitly (the MagicDNS name
// Pulumi outputs, or an address reserved in the tailnet).
const (
	TailscaledPath     = "/usr/local/bin/tailscaled"
	TailscalePath      = "/usr/local/bin/tailscale"
	TailscaledUnitPath = UnitDir + "/tailscaled.service"
	// tailscaleAuthKeyPath holds the auth key for the one command that
	// uses it (read by `tailscale up --auth-key=file:…`, so that the key
	// is on no command line and in no error), then is removed.
	tailscaleAuthKeyPath = "/run/zeitwork/tailscale-auth-key"
	// The apt package's paths, when release.tailscale* are not given.
	aptTailscaledPath = "/usr/sbin/tailscaled"
	aptTailscalePath  = "/usr/bin/tailscale"
)

// shell is a Host that runs commands: what joining the tailnet needs
// beyond files, packages and units.
type shell interface {
	Shell(ctx context.Context, cmd string) ([]byte, error)
}

// Shell runs cmd on the machine.
func (h *sshHost) Shell(ctx context.Context, cmd string) ([]byte, error) {
	return h.c.Run(ctx, cmd, nil)
}

// tailscaleBinaries are the paths tailscaled and the CLI run from on n.
func (c *Cluster) tailscaleBinaries() (daemon, cli string) {
	if c.Release.Tailscaled != "" {
		return TailscaledPath, TailscalePath
	}
	return aptTailscaledPath, aptTailscalePath
}

// TailscaledUnit is the unit bootstrap writes: its own, so that the flags
// are the same whether the binaries came from a release or from apt.
func (c *Cluster) TailscaledUnit() []byte {
	daemon, _ := c.tailscaleBinaries()
	flags := "--state=/var/lib/tailscale/tailscaled.state --socket=/run/tailscale/tailscaled.sock --port=41641"
	if c.Tailscale.Userspace {
		flags += " --tun=userspace-networking"
	}
	return fmt.Appendf(nil, `# Written by zeitwork bootstrap; a new run overwrites changes.
[Unit]
Description=Tailscale node agent (the cluster's private network)
Documentation=https://tailscale.com/kb/
Wants=network-pre.target
After=network-pre.target NetworkManager.service systemd-resolved.service

[Service]
ExecStart=%s %s
ExecStopPost=%s --cleanup
Restart=on-failure
RuntimeDirectory=tailscale
RuntimeDirectoryMode=0755
StateDirectory=tailscale
StateDirectoryMode=0700
CacheDirectory=tailscale
CacheDirectoryMode=0750
Type=notify

[Install]
WantedBy=multi-user.target
`, daemon, flags, daemon)
}

// tailnetRun is what one run of bootstrap knows of the tailnet.
type tailnetRun struct {
	authKey     string
	daemon, cli []byte                 // release.tailscaled and release.tailscale
	nodes       map[string]TailnetNode // by node name, once logged in
}

// tailnetStatus is what bootstrap reads of `tailscale status --json`.
type tailnetStatus struct {
	BackendState string
	Self         *struct {
		HostName     string
		DNSName      string
		TailscaleIPs []netip.Addr
		Online       bool
	}
}

// TailnetNode is a node as the tailnet knows it.
type TailnetNode struct {
	IPs     []netip.Addr
	DNSName string // MagicDNS name, without the trailing dot; "" without MagicDNS
}

// Address is the node's 100.x address, or its IPv6 one in a tailnet
// that gives no IPv4 (invalid if it has none).
func (t TailnetNode) Address() netip.Addr {
	for _, a := range t.IPs {
		if a.Is4() {
			return a
		}
	}
	if len(t.IPs) > 0 {
		return t.IPs[0]
	}
	return netip.Addr{}
}

// tailnetSteps join every node to the tailnet; each node's tailnet
// addresses land in b.ts.nodes as its login step is checked.
func (b *Bootstrap) tailnetSteps() []Step {
	var steps []Step
	for _, n := range b.Cluster.Nodes {
		steps = append(steps, b.nodeTailnetSteps(n, b.hosts[n.Name])...)
	}
	return steps
}

func (b *Bootstrap) nodeTailnetSteps(n Node, h Host) []Step {
	c := b.Cluster
	_, cli := c.tailscaleBinaries()
	var steps []Step
	if c.Release.Tailscaled != "" {
		steps = append(steps, fileStep(n.Name+": tailscale binaries", h, []File{
			{Path: TailscaledPath, Mode: 0o755, Data: b.ts.daemon},
			{Path: TailscalePath, Mode: 0o755, Data: b.ts.cli},
		}))
	} else {
		steps = append(steps, packagesStep(n.Name+": tailscale package", h, []string{"tailscale"}))
	}
	unit := c.TailscaledUnit()
	steps = append(steps, fileStep(n.Name+": tailscaled unit", h, []File{{Path: TailscaledUnitPath, Mode: 0o644, Data: unit}}))

	// tailscaled is restarted when its unit or binary changed since it
	// was last (re)started, like zeitwork's own units.
	marker := path.Join(path.Dir(AppliedMarker), "tailscaled")
	applied := fmt.Appendf(nil, "%s %s\n%s %s\n", digest(unit), TailscaledUnitPath, digest(b.ts.daemon), TailscaledPath)
	steps = append(steps, Step{
		Name: n.Name + ": start tailscaled.service",
		Check: func(ctx context.Context) (Status, error) {
			stopped, err := h.Stopped(ctx, []string{"tailscaled.service"})
			if err != nil {
				return Status{}, err
			}
			if len(stopped) > 0 {
				return Status{Detail: "not running"}, nil
			}
			have, err := h.SHA256s(ctx, []string{marker})
			if err != nil {
				return Status{}, err
			}
			if have[0] != digest(applied) {
				return Status{Detail: "running, but not with this binary and unit: to restart"}, nil
			}
			return Status{Done: true, Detail: "running"}, nil
		},
		Apply: func(ctx context.Context) error {
			sh, err := shellOf(h)
			if err != nil {
				return err
			}
			if _, err := sh.Shell(ctx, "systemctl daemon-reload && systemctl enable --quiet tailscaled.service && systemctl restart tailscaled.service"); err != nil {
				return err
			}
			_, err = h.Install(ctx, marker, applied, 0o644)
			return err
		},
	})

	status := func(ctx context.Context) (tailnetStatus, error) {
		sh, err := shellOf(h)
		if err != nil {
			return tailnetStatus{}, err
		}
		out, err := sh.Shell(ctx, sshx.Quote(cli)+" status --json")
		var st tailnetStatus
		// It exits non-zero when logged out, with the JSON on stdout.
		if jerr := json.Unmarshal(out, &st); jerr != nil {
			if err == nil {
				err = jerr
			}
			return tailnetStatus{}, fmt.Errorf("tailscale status: %w", err)
		}
		return st, nil
	}
	steps = append(steps, Step{
		Name: fmt.Sprintf("%s: tailnet login as %s", n.Name, n.Name),
		Check: func(ctx context.Context) (Status, error) {
			st, err := status(ctx)
			if err != nil {
				return Status{}, err
			}
			switch {
			case st.BackendState != "Running" || st.Self == nil:
				return Status{Detail: "not logged in (" + st.BackendState + ")"}, nil
			case st.Self.HostName != n.Name:
				return Status{Detail: fmt.Sprintf("logged in as %q: to log in as %s", st.Self.HostName, n.Name)}, nil
			case len(st.Self.TailscaleIPs) == 0:
				return Status{Detail: "logged in, no tailnet address yet"}, nil
			}
			tn := TailnetNode{IPs: st.Self.TailscaleIPs, DNSName: strings.TrimSuffix(st.Self.DNSName, ".")}
			if b.ts.nodes == nil {
				b.ts.nodes = map[string]TailnetNode{}
			}
			b.ts.nodes[n.Name] = tn
			ips := make([]string, len(tn.IPs))
			for i, a := range tn.IPs {
				ips[i] = a.String()
			}
			return Status{Done: true, Detail: "running, " + strings.Join(ips, " ")}, nil
		},
		Apply: func(ctx context.Context) error {
			sh, err := shellOf(h)
			if err != nil {
				return err
			}
			if _, err := h.Install(ctx, tailscaleAuthKeyPath, []byte(b.ts.authKey), 0o600); err != nil {
				return err
			}
			// --reset: flags not given go back to their defaults, so that
			// the node's settings are exactly these on every run.
			cmd := sshx.Quote(cli) + " up --reset --timeout=2m --auth-key=file:" + tailscaleAuthKeyPath + " --hostname=" + sshx.Quote(n.Name)
			if c.Tailscale.LoginServer != "" {
				cmd += " --login-server=" + sshx.Quote(c.Tailscale.LoginServer)
			}
			_, err = sh.Shell(ctx, cmd+"; s=$?; rm -f "+tailscaleAuthKeyPath+"; exit $s")
			return err
		},
	})
	return steps
}

// joinTailnet runs the tailnet steps before the rest, because the rest is
// rendered with the internal addresses they find: a node without an
// internal_address gets its tailnet IPv4 address.
func (b *Bootstrap) joinTailnet(ctx context.Context, r Runner) (Result, error) {
	c := b.Cluster
	if c.Tailscale == nil {
		return Result{}, nil
	}
	b.ts.authKey = b.Env[c.Tailscale.AuthKeyEnv]
	if c.Release.Tailscaled != "" {
		var err error
		if b.ts.daemon, err = readRelease(c, "release.tailscaled", c.Release.Tailscaled); err != nil {
			return Result{}, err
		}
		if b.ts.cli, err = readRelease(c, "release.tailscale", c.Release.Tailscale); err != nil {
			return Result{}, err
		}
	}
	fmt.Fprintln(b.Out, "tailnet:")
	res, err := r.Run(ctx, b.tailnetSteps())
	if err != nil {
		return res, err
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if !n.addressFromTailnet {
			continue
		}
		switch tn, ok := b.ts.nodes[n.Name]; {
		case ok && len(tn.IPs) > 0:
			n.InternalAddress = tn.Address().String()
			fmt.Fprintf(b.Out, "  %s: internal address %s (tailnet)\n", n.Name, n.InternalAddress)
		case r.DryRun:
			// A node not yet joined has no address yet.
			fmt.Fprintf(b.Out, "  %s: internal address: its tailnet address, once it has joined\n", n.Name)
		default:
			return res, fmt.Errorf("%s: joined the tailnet but has no tailnet address: set nodes[].internal_address", n.Name)
		}
	}
	return res, nil
}

func readRelease(c *Cluster, field, p string) ([]byte, error) {
	raw, err := os.ReadFile(c.Path(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return raw, nil
}

func shellOf(h Host) (shell, error) {
	if sh, ok := h.(shell); ok {
		return sh, nil
	}
	return nil, errors.New("this host runs no commands: it cannot join the tailnet")
}

// packagesStep installs apt packages that are missing.
func packagesStep(name string, h Host, pkgs []string) Step {
	return Step{
		Name: name,
		Check: func(ctx context.Context) (Status, error) {
			missing, err := h.Missing(ctx, pkgs)
			if err != nil {
				return Status{}, err
			}
			if len(missing) > 0 {
				return Status{Detail: "to install: " + strings.Join(missing, " ")}, nil
			}
			return Status{Done: true, Detail: strings.Join(pkgs, " ")}, nil
		},
		Apply: func(ctx context.Context) error {
			// Tailscale's package is in Tailscale's own apt repository
			// (pkgs.tailscale.com), which the machine must have.
			if err := h.InstallPackages(ctx, pkgs); err != nil {
				return fmt.Errorf("%w (is pkgs.tailscale.com in the machine's apt sources? or set release.tailscaled and release.tailscale)", err)
			}
			return nil
		},
	}
}

// validateTailscale checks the tailscale section and its release files.
func (c *Cluster) validateTailscale(bad func(path, format string, args ...any)) {
	t := c.Tailscale
	if t == nil {
		if c.Release.Tailscaled != "" || c.Release.Tailscale != "" {
			bad("release.tailscaled", "set, but there is no tailscale section: nothing would use it")
		}
		return
	}
	if t.LoginServer != "" {
		if u, err := url.Parse(t.LoginServer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("tailscale.login_server", "%q is not an http(s) URL (e.g. https://headscale.example.com)", t.LoginServer)
		}
	}
	if (c.Release.Tailscaled == "") != (c.Release.Tailscale == "") {
		bad("release.tailscale", "release.tailscaled and release.tailscale go together: both (installed from these files) or neither (Tailscale's apt package)")
	}
}

func (res Result) plus(o Result) Result {
	return Result{Steps: res.Steps + o.Steps, Done: res.Done + o.Done, Applied: res.Applied + o.Applied, Todo: res.Todo + o.Todo, Unknown: res.Unknown + o.Unknown}
}
