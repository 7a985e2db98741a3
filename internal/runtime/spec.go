package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/uuid"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Spec is one instance as the agent wants it run.
type Spec struct {
	InstanceID uuid.UUID
	// Image is the reference Pull was called with.
	Image string
	// Env holds the project's variables, already decrypted. PORT is set from
	// Port and wins over an Env entry of the same name: the platform, not
	// the project, chooses the port it health-checks and routes to.
	Env map[string]string
	// Port is the port the instance must listen on, given to it as $PORT.
	Port int
	// CPUMillis is the CPU limit in thousandths of a core (CFS quota over a
	// 100 ms period); 0 means unlimited, otherwise at least 10.
	CPUMillis int
	// CPURequestMillis is the CPU the instance is sure of when the node's
	// CPUs are contended: its share (cgroup cpu.shares, cpu.weight on
	// cgroup v2) is proportional to it, 1024 per core as Kubernetes gives.
	// Up to CPUMillis, idle CPU is anyone's. 0 leaves the default share
	// (that of a 1000m request); otherwise at most CPUMillis when that is set.
	CPURequestMillis int
	// MemoryMB is the memory limit in MiB, swap included (the instance gets
	// no swap); 0 means unlimited.
	MemoryMB int
	// NetNSPath is the network namespace the instance joins, prepared by the
	// network package. Empty, the instance gets a network namespace of its
	// own with nothing but loopback: unreachable, never the host's network.
	NetNSPath string
	// ResolvConf, when set, is a file mounted read-only at the instance's
	// /etc/resolv.conf (the network package writes one naming the resolvers
	// its policy lets the instance reach); empty keeps the image's own.
	ResolvConf string
	// HostNetwork runs the instance in the host's network namespace. For
	// tests and local development only; never with NetNSPath.
	HostNetwork bool
}

const cfsPeriod = 100_000 // µs

// Validate reports everything wrong with s at once, each problem naming its field.
func (s Spec) Validate() error {
	var errs []error
	if s.InstanceID == uuid.Nil {
		errs = append(errs, invalidField("InstanceID", "required"))
	}
	if s.Image == "" {
		errs = append(errs, invalidField("Image", "required"))
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, invalidField("Port", fmt.Sprintf("%d is not a TCP port", s.Port)))
	}
	if s.CPUMillis < 0 || (s.CPUMillis > 0 && s.CPUMillis < 10) {
		errs = append(errs, invalidField("CPUMillis", fmt.Sprintf("%d (want 0 for unlimited, or at least 10)", s.CPUMillis)))
	}
	if s.CPURequestMillis < 0 || (s.CPUMillis > 0 && s.CPURequestMillis > s.CPUMillis) {
		errs = append(errs, invalidField("CPURequestMillis", fmt.Sprintf("%d (want 0 for the default share, or up to CPUMillis)", s.CPURequestMillis)))
	}
	if s.MemoryMB < 0 {
		errs = append(errs, invalidField("MemoryMB", fmt.Sprintf("%d is negative", s.MemoryMB)))
	}
	if s.NetNSPath != "" && !filepath.IsAbs(s.NetNSPath) {
		errs = append(errs, invalidField("NetNSPath", fmt.Sprintf("%q is not an absolute path", s.NetNSPath)))
	}
	if s.ResolvConf != "" && !filepath.IsAbs(s.ResolvConf) {
		errs = append(errs, invalidField("ResolvConf", fmt.Sprintf("%q is not an absolute path", s.ResolvConf)))
	}
	if s.NetNSPath != "" && s.HostNetwork {
		errs = append(errs, invalidField("NetNSPath and HostNetwork", "set one at most"))
	}
	for k, v := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs = append(errs, invalidField("Env", fmt.Sprintf("%q is not a variable name", k)))
		}
		if strings.ContainsRune(v, 0) {
			// The value may be a secret: name the variable, never the value.
			errs = append(errs, invalidField("Env", fmt.Sprintf("%s contains a NUL byte", k)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return nil
}

// env is the process environment the instance gets on top of the image's:
// the project's variables in a stable order, then PORT.
func (s Spec) env() []string {
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		if k != "PORT" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	env := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		env = append(env, k+"="+s.Env[k])
	}
	return append(env, "PORT="+strconv.Itoa(s.Port))
}

// Hash identifies everything about s that is baked into a created
// instance. The convergence loop compares it with Status.SpecHash: a
// different hash means the instance must be replaced, not adopted. Env
// values go in (hashed, never stored in the clear by this label); anyone
// who can read the label can read the container's spec anyway.
func (s Spec) Hash() string {
	h := sha256.New()
	// A versioned, field-named encoding: adding a field later changes every
	// hash once, deliberately, rather than colliding silently.
	_ = json.NewEncoder(h).Encode(struct {
		V           int
		Image       string
		Env         []string
		CPUMillis   int
		CPURequest  int
		MemoryMB    int
		NetNSPath   string
		ResolvConf  string
		HostNetwork bool
	}{3, s.Image, s.env(), s.CPUMillis, s.CPURequestMillis, s.MemoryMB, s.NetNSPath, s.ResolvConf, s.HostNetwork})
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// specOpts turns s into the OCI spec on top of the image's config. The same
// spec goes to runc and to Kata: Kata sizes the microVM from the very same
// CPU quota and memory limit, and applies the hardening again in the guest.
func (s Spec) specOpts(img oci.Image, h hardening) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithEnv(s.env()),
		oci.WithHostname(hostname(s.InstanceID)),
	}
	opts = append(opts, h.specOpts(s.HostNetwork || s.NetNSPath != "")...)
	if s.CPUMillis > 0 {
		// Boosted at first, then lowered to CPUMillis: see boost.go.
		millis := max(s.CPUMillis, h.boostMillis(s))
		opts = append(opts, oci.WithCPUCFS(int64(millis)*cfsPeriod/1000, cfsPeriod))
	}
	if s.CPURequestMillis > 0 {
		opts = append(opts, oci.WithCPUShares(cpuShares(s.CPURequestMillis)))
	}
	if s.MemoryMB > 0 {
		limit := int64(s.MemoryMB) << 20
		opts = append(opts, oci.WithMemoryLimit(uint64(limit)), withMemorySwapIfSupported(limit))
	}
	if s.ResolvConf != "" {
		opts = append(opts, oci.WithMounts([]specs.Mount{{
			Destination: "/etc/resolv.conf", Type: "bind", Source: s.ResolvConf,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		}}))
	}
	switch {
	case s.HostNetwork:
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace))
	case s.NetNSPath != "":
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNSPath}))
	}
	// Otherwise containerd's default spec already asks for a fresh network
	// namespace: loopback only.
	return opts
}

// cpuShares converts a CPU request to cgroup v1 shares, 1024 a core, at
// least 2 (the kernel's minimum). runc maps shares to cgroup v2's cpu.weight
// itself, so the same number serves both.
func cpuShares(requestMillis int) uint64 {
	return uint64(max(2, requestMillis*1024/1000))
}

// withMemorySwapIfSupported sets memory+swap to the memory limit, i.e. no
// swap. Where the kernel does not account swap (cgroup v1 without
// swapaccount, no memory.memsw.* files) runc refuses any swap value, so it is
// left out there and the memory limit alone applies.
func withMemorySwapIfSupported(limit int64) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		if !swapAccounted() {
			return nil
		}
		return oci.WithMemorySwap(limit)(ctx, c, ctr, s)
	}
}

// swapAccounted reports whether memory+swap can be limited on this host.
// On cgroup v2 runc handles it (memory.swap.max); on v1 it needs the
// memory.memsw.* files, which exist only with swap accounting enabled.
var swapAccounted = sync.OnceValue(func() bool {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
})

// invalidField is one problem with a Spec or Config, naming the field.
func invalidField(field, problem string) error {
	return fmt.Errorf("%s: %s", field, problem)
}
