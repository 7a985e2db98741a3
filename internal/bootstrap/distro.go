package bootstrap

import "slices"

// Distro is everything that differs between the supported distributions.
// The systemd units, paths and kernel settings are the same on Debian
// (12+) and Ubuntu (24.04 LTS+); only what apt must install differs.
type Distro struct {
	OS OS
	// Base is installed on every node.
	Base []string
	// Worker is what a worker needs besides Base: containerd and runc from
	// the distribution, nftables and iproute2 for instance networking,
	// netbase: nft reads /etc/protocols, which minimal images lack, and
	// isal: its igzip decompresses image layers ~3.5 times as fast as Go's
	// gzip, and the agent's containerd client uses it when it is on PATH
	// to unpack every layer it re-owns for user namespaces.
	Worker []string
	// Builder is what a build host needs besides Base: runc for
	// buildkitd's worker, the CNI plugins and nftables for its RUN steps'
	// network.
	Builder []string
	// Kata is what a kata worker needs besides Worker from the
	// distribution; the Kata Containers release itself (shim, kernel,
	// image) is not packaged by either and comes from its static tarball.
	Kata []string
}

// DistroOf returns the distribution's differences.
func DistroOf(os OS) Distro {
	d := Distro{
		OS:      os,
		Base:    []string{"ca-certificates", "curl"},
		Worker:  []string{"containerd", "runc", "nftables", "iproute2", "netbase", "isal"},
		Builder: []string{"runc", "nftables", "containernetworking-plugins"},
	}
	// tar needs them to unpack Kata's release (.tar.zst; .tar.xz before 3.3).
	d.Kata = []string{"zstd", "xz-utils"}
	if os == OSUbuntu {
		// Ubuntu's cloud kernels keep vhost_vsock (Kata's guest channel)
		// and several netfilter modules in linux-modules-extra; Debian's
		// kernel package ships them.
		d.Kata = append(d.Kata, "linux-modules-extra-$(uname -r)")
	}
	return d
}

// Packages are the apt packages node n needs.
func (d Distro) Packages(n Node) []string {
	p := append([]string(nil), d.Base...)
	if n.Has(RoleWorker) {
		p = append(p, d.Worker...)
		if n.Runtime == RuntimeKata {
			p = append(p, d.Kata...)
		}
	}
	if n.Has(RoleBuilder) {
		for _, pkg := range d.Builder {
			if !slices.Contains(p, pkg) {
				p = append(p, pkg)
			}
		}
	}
	return p
}
