package simmachine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StateDir holds one directory per live cluster, named by its prefix: a
// lock its test holds while it runs, and the list of its machines. A test
// killed before its cleanups (SIGKILL, a panic, Ctrl-C) leaves its
// machines' resources behind; the next Start finds the lock free and
// removes them, and only them: a live test's lock is held, and nothing
// without a directory here is touched.
const StateDir = "/run/zeitwork-sim"

// own records the cluster in StateDir and holds its lock until the test
// ends (registered first, so released last).
func (c *Cluster) own(t testing.TB) error {
	// Locked before it has its name: a sweep never sees it unlocked.
	dir := filepath.Join(StateDir, c.Prefix)
	tmp := filepath.Join(StateDir, "."+c.Prefix)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(tmp, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		f.Close()
		return err
	}
	c.cleanup(func() {
		_ = os.RemoveAll(dir)
		f.Close()
	})
	c.state = dir
	return nil
}

// record notes a machine's name and directory before anything of it exists.
func (c *Cluster) record(name, dir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(c.state, "machines"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s\n", name, dir)
	return err
}

// sweep removes what killed tests left: each cluster whose lock is free.
func sweep(t testing.TB) {
	entries, _ := os.ReadDir(StateDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			continue // being made, or the network lock
		}
		dir := filepath.Join(StateDir, e.Name())
		f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // alive
			continue
		}
		if err := removeLeft(e.Name(), dir); err != nil {
			t.Logf("simmachine: removing the machines a killed test left (%s): %v", e.Name(), err)
		} else {
			_ = os.RemoveAll(dir)
		}
		f.Close()
	}
}

// removeLeft stops and removes the machines of cluster prefix.
func removeLeft(prefix, dir string) error {
	var errs []error
	if raw, err := os.ReadFile(filepath.Join(dir, "machines")); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		for sc.Scan() {
			name, mdir, ok := strings.Cut(sc.Text(), " ")
			if !ok || !strings.HasPrefix(name, prefix+"-") {
				continue
			}
			// Its processes (nspawn, and all of the machine) are in its cgroup.
			for _, root := range cgroupRoots() {
				if err := killAll(filepath.Join(root, "zeitwork-sim", name)); err != nil {
					errs = append(errs, err)
				}
			}
			_ = ip("netns", "delete", name)
			// What nspawn removes when it exits, and a killed one does not.
			_ = os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", name))
			if err := syscall.Unmount(filepath.Join(mdir, "root"), syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mdir, err))
				continue
			}
			_ = os.RemoveAll(mdir)
			for _, root := range cgroupRoots() {
				if err := rmTree(filepath.Join(root, "zeitwork-sim", name)); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	_ = ip("link", "delete", prefix)
	_ = exec.Command("nft", "delete", "table", "ip", prefix).Run()
	for _, root := range cgroupRoots() {
		_ = os.Remove(filepath.Join(root, "zeitwork-sim")) // fails while other machines are there
	}
	return errors.Join(errs...)
}

// killAll kills every process in the cgroup d and below, and waits (up to
// 30s) until they are gone: a cgroup with processes cannot be removed.
func killAll(d string) error {
	for deadline := time.Now().Add(30 * time.Second); ; {
		left := 0
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			raw, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(raw)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					left++
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of %s survive SIGKILL", left, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rmTree removes cgroup d's directories, deepest first (rmdir only: a
// cgroup's files cannot be deleted).
func rmTree(d string) error {
	var all []string
	_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			all = append(all, p)
		}
		return nil
	})
	var errs []error
	for i := len(all) - 1; i >= 0; i-- {
		if err := os.Remove(all[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
