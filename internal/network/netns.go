package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// In Go, a network namespace belongs to an OS thread, and goroutines move
// between threads. Everything here that must run inside a namespace does so
// on a goroutine locked to its own thread that never unlocks: when that
// goroutine returns, the runtime ends the thread instead of handing a thread
// in a foreign namespace to other goroutines. Links, addresses and routes do
// not need this at all: a netlink handle opened at a namespace works from
// any thread. Only sysctls (/proc/sys/net is the calling thread's
// namespace), creating a namespace, and running nft do.

// inNetns runs fn on a throwaway thread that has joined the network
// namespace open at fd.
func inNetns(fd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// createNetns creates a network namespace and pins it at path by a bind
// mount, as `ip netns add` does, so that it outlives this process: a
// restarted agent finds its instances' namespaces where it left them. prepare
// runs inside the new namespace before anything is put in it.
func createNetns(path string, prepare func() error) error {
	if err := ensureNetnsDir(filepath.Dir(path)); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
			if err != nil {
				return err
			}
			f.Close()
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				os.Remove(path)
				return fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
				os.Remove(path)
				return fmt.Errorf("bind-mount %s: %w", path, err)
			}
			if err := prepare(); err != nil {
				_ = removeNetns(path)
				return err
			}
			return nil
		}()
	}()
	return <-errc
}

// ensureNetnsDir makes dir a shared mount point, as iproute2 does for
// /run/netns: namespaces mounted or unmounted here then show the same in
// every mount namespace that has the directory, and `ip netns` and this
// package see the same namespaces.
func ensureNetnsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// openNetns opens the namespace pinned at path. A file that is there but is
// not a namespace (a crash between creating the file and mounting on it)
// counts as missing, and is removed so that it can be created again.
func openNetns(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		os.Remove(path)
		return -1, os.ErrNotExist
	}
	return fd, nil
}

// removeNetns unpins the namespace at path. The namespace itself goes when
// the last process in it exits, so the instance must be stopped first.
func removeNetns(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// RemoveNetnsWithPrefix unpins every namespace in dir whose name begins
// with prefix: for whoever stopped a node's instances behind its agent's
// back (tests, benchmarks) and must not leave their namespaces on the
// machine, where each one slows every later namespace's first /proc/sys
// lookups and every new mount namespace's copy of the mounts.
func RemoveNetnsWithPrefix(dir, prefix string) error {
	if prefix == "" {
		return errors.New("remove network namespaces: empty prefix")
	}
	names, err := filepath.Glob(filepath.Join(dir, prefix) + "*")
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, removeNetns(n))
	}
	return errors.Join(errs...)
}

// sysctl sets a /proc/sys value of the calling thread's network namespace
// (name is a path under /proc/sys, slashes not dots, since interface names
// may contain dots), writing only if it differs, and returns what it found.
func sysctl(name, value string) (old string, err error) {
	p := "/proc/sys/" + name
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	old = strings.TrimSpace(string(b))
	if old == value {
		return old, nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return old, fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return old, nil
}
