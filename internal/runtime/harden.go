package runtime

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Capabilities is the whole set an instance's process may hold. What an
// image that starts as root typically does before serving is to chown its
// data directories and drop to an unprivileged user (su-exec, gosu, nginx's
// and Apache's own workers): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID,
// SETGID, and KILL to signal those workers. Dropped from containerd's
// default set: NET_RAW (raw sockets: spoofing, ARP/ND games on the
// instance's link), MKNOD, SETFCAP, SETPCAP, SYS_CHROOT, AUDIT_WRITE, and
// NET_BIND_SERVICE: the platform chooses the port ($PORT, routed to), so a
// port below 1024 is never needed, and inside a user namespace the
// capability would not reach the node-owned network namespace anyway. An
// image whose user is not root gets none of them in its effective set.
var Capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID",
}

// userNSSize is how many uids (and gids) an instance's user namespace maps:
// the 16-bit range images assume (nobody is 65534).
const userNSSize = 65536

// hardening is what every instance gets on top of its Spec, from the
// Runtime's Config.
type hardening struct {
	pidsLimit int64
	tmpBytes  int64
	userNS    bool
	uidBase   uint32 // host uid (and gid) of the instance's root, with userNS
	boostCPU  int    // CPU millis of the start boost, 0 for none (boost.go)
}

func (r *Runtime) hardening() hardening {
	return hardening{
		pidsLimit: r.cfg.PidsLimit,
		tmpBytes:  int64(r.cfg.TmpSizeMB) << 20,
		userNS:    r.userNS,
		uidBase:   r.cfg.UserNSBase,
		boostCPU:  r.boostCPU(),
	}
}

func (h hardening) idMap() []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: h.uidBase, Size: userNSSize}}
}

// specOpts come after the image's config (they read the image's user) and
// before the seccomp profile, which containerd derives from the capabilities.
// sharedNetNS says the instance joins a network namespace made outside it
// (the node's, or one the network package made).
func (h hardening) specOpts(sharedNetNS bool) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(Capabilities),
		withoutCapsForNonRoot,
		oci.WithPidsLimit(h.pidsLimit),
		// /tmp is memory the instance's cgroup is charged for, bounded on
		// its own too: the one writable place apps reach for first.
		oci.WithMounts([]specs.Mount{{
			Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(h.tmpBytes, 10)},
		}}),
	}
	if h.userNS {
		opts = append(opts, oci.WithUserNamespace(h.idMap(), h.idMap()))
		if sharedNetNS {
			opts = append(opts, withSysfsForUserNS)
		}
	}
	return append(opts, seccomp.WithDefaultProfile(), withNativeSyscallsOnly)
}

// withNativeSyscallsOnly narrows the seccomp profile to the node's own
// system call ABI. containerd's default also admits the 32-bit ones
// (i386 and x32 beside x86-64, arm beside arm64), for images with 32-bit
// binaries; no app this platform builds has them, a second table of
// system calls is more kernel for an instance to reach (the 32-bit
// compat paths have had their own bugs), and libseccomp compiles the
// filter once per ABI in every instance's start: measured on a 2-core
// node, 12–15 ms of CPU per start, a tenth of what fifty starts at once
// cost. A call through another ABI (int $0x80 on x86-64) kills the
// thread that made it, so a 32-bit program (one thread) does not run:
// as under gVisor, which has no 32-bit x86 either.
func withNativeSyscallsOnly(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	native, ok := nativeArch[goruntime.GOARCH]
	if !ok || s.Linux == nil || s.Linux.Seccomp == nil {
		return nil
	}
	s.Linux.Seccomp.Architectures = []specs.Arch{native}
	return nil
}

// nativeArch is the node's own ABI in seccomp's terms, for the
// architectures a node runs on; elsewhere containerd's list stays.
var nativeArch = map[string]specs.Arch{
	"amd64": specs.ArchX86_64,
	"arm64": specs.ArchAARCH64,
}

// withoutCapsForNonRoot keeps an unprivileged image user unprivileged:
// runc would otherwise hand a non-root process the effective set as well
// (Docker clears it the same way).
func withoutCapsForNonRoot(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process == nil || s.Process.User.UID == 0 || s.Process.Capabilities == nil {
		return nil
	}
	c := s.Process.Capabilities
	c.Effective, c.Permitted, c.Inheritable, c.Ambient = nil, nil, nil, nil
	return nil
}

// withSysfsForUserNS: sysfs may only be mounted by the owner of the
// network namespace, and an instance's namespace is made by the node (the
// network package, or the host's own), not inside its user namespace. runc
// then fails with EPERM. The instance gets a read-only bind of the node's
// /sys instead, as Docker does for user-namespaced containers on a shared
// network namespace; the masked paths still apply.
func withSysfsForUserNS(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	for i, m := range s.Mounts {
		if m.Destination == "/sys" && m.Type == "sysfs" {
			s.Mounts[i] = specs.Mount{
				Destination: "/sys", Type: "bind", Source: "/sys",
				Options: []string{"rbind", "ro", "nosuid", "noexec", "nodev"},
			}
		}
	}
	return nil
}

// userNSSupported reports whether this kernel lets us make user
// namespaces: compiled in, and not switched off by a sysctl.
func userNSSupported() (bool, string) {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil {
		return false, fmt.Sprintf("no user namespaces in this kernel (%v)", err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n == 0 {
		return false, "user.max_user_namespaces is 0"
	}
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return false, "no /proc/self/ns/user"
	}
	return true, ""
}
