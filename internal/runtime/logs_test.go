package runtime_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/runtime"
)

// TestLogsAreBoundedAndFollowable writes about 800 KiB of numbered lines
// through a 64 KiB bound checked every 250 ms, at about 300 KiB/s: the files
// on disk stay near the bound, and a follower that started before the first
// line reads them all, in order, across the rotations.
func TestLogsAreBoundedAndFollowable(t *testing.T) {
	e := newEnv(t)
	const bound = 64 << 10
	r := e.runtime(t, func(c *runtime.Config) {
		c.LogMaxBytes = bound
		c.LogCheckInterval = 250 * time.Millisecond
	})
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/"))

	follow, err := r.Logs(context.Background(), s.InstanceID, true)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lines []string
		done  = make(chan error, 1)
	)
	go func() {
		sc := bufio.NewScanner(follow)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
		done <- sc.Err()
	}()

	const batches, perBatch = 40, 400
	pad := strings.Repeat("x", 40)
	logPath := filepath.Join(e.logDir, e.ns, s.InstanceID.String()+".log")
	var maxSeen int64
	for b := range batches {
		mustGet(t, url(s, fmt.Sprintf("/log?line=rot-%d-%s&n=%d", b, pad, perBatch)))
		if fi, err := os.Stat(logPath); err == nil {
			maxSeen = max(maxSeen, fi.Size())
		}
		time.Sleep(40 * time.Millisecond)
	}
	last := fmt.Sprintf("rot-%d-%s %d", batches-1, pad, perBatch)
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(lines)
		seen := n > 0 && lines[n-1] == last
		mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			select {
			case err := <-done:
				t.Fatalf("follower ended early (%v) with %d lines", err, n)
			default:
			}
			t.Fatalf("follower never saw the last line; it has %d lines", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Every line the follower got is in order; count what was lost.
	mu.Lock()
	got := slicesClone(lines)
	mu.Unlock()
	written := batches * perBatch
	prevB, prevI, received := -1, 0, 0
	for _, l := range got {
		var b, i int
		if _, err := fmt.Sscanf(l, "rot-%d-"+pad+" %d", &b, &i); err != nil {
			continue // the server's start-up lines
		}
		if b < prevB || (b == prevB && i <= prevI) {
			t.Fatalf("line %q came after rot-%d … %d: out of order or repeated", l, prevB, prevI)
		}
		prevB, prevI = b, i
		received++
	}
	total := int64(written * len(last))
	t.Logf("wrote %d lines (%d KiB) through a %d KiB bound: follower got %d (%d lost); largest log file seen %d KiB",
		written, total>>10, bound>>10, received, written-received, maxSeen>>10)
	if lost := written - received; lost*100 > written {
		t.Errorf("follower lost %d of %d lines (copytruncate should lose at most a rare few)", lost, written)
	}
	// A reader opened now gets the previous generation and the current one,
	// in order.
	all := readLogs(t, r, s)
	if !strings.HasSuffix(all, last+"\n") {
		t.Errorf("Logs does not end with the last line: ...%q", all[max(0, len(all)-200):])
	}

	// On disk: the current file is under the bound once checked, the
	// previous generation holds what was written since the check before.
	time.Sleep(600 * time.Millisecond)
	cur, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(logPath + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Size() > bound || old.Size()+cur.Size() > total/3 {
		t.Errorf("log files %d + %d bytes after writing %d with a bound of %d", cur.Size(), old.Size(), total, bound)
	}

	// Removing the instance ends the follow, after the last of its output.
	if err := r.Stop(ctxFor(t, time.Minute), s.InstanceID, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the instance was removed")
	}
	follow.Close()
	mu.Lock()
	tail := lines[len(lines)-1]
	mu.Unlock()
	if tail != "got SIGTERM, exiting" {
		t.Errorf("follow ended on %q, want the instance's last line", tail)
	}
}

func TestLogsFollowEndsOnCloseAndContext(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	waitLogs(t, r, s, "listening on")

	ctx, cancel := context.WithCancel(context.Background())
	byCtx, err := r.Logs(ctx, s.InstanceID, true)
	if err != nil {
		t.Fatal(err)
	}
	byClose, err := r.Logs(context.Background(), s.InstanceID, true)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan string, 2)
	for name, rc := range map[string]io.ReadCloser{"ctx": byCtx, "close": byClose} {
		go func() {
			io.Copy(io.Discard, rc)
			ended <- name
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	byClose.Close()
	for range 2 {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a follower did not end")
		}
	}
	byCtx.Close()
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// TestLogBoundHoldsAgainstAWriterThatNeverStops: an instance printing as
// fast as it can, with the timed check effectively off (once an hour), never
// has a log file over the bound: the bound is kept as it writes. The
// output keeps flowing through the rotations, in order.
func TestLogBoundHoldsAgainstAWriterThatNeverStops(t *testing.T) {
	e := newEnv(t)
	const bound = 64 << 10
	r := e.runtime(t, func(c *runtime.Config) {
		c.LogMaxBytes = bound
		c.LogCheckInterval = time.Hour
	})
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	logPath := filepath.Join(e.logDir, e.ns, s.InstanceID.String()+".log")
	mustGet(t, url(s, "/flood"))

	var largest int64
	for range 100 {
		for _, p := range []string{logPath, logPath + ".1"} {
			if fi, err := os.Stat(p); err == nil {
				largest = max(largest, fi.Size())
				if fi.Size() > bound {
					t.Fatalf("%s is %d bytes, over the bound of %d", filepath.Base(p), fi.Size(), bound)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still flowing, and far past the bound in all. A reader slower than
	// the writer (this test, on a busy machine) may find whole files
	// rotated away before it got to them, as the bound wants: what it
	// returns is in order, and what is missing is whole files, never part
	// of one.
	var last, lostFiles int
	all := readLogs(t, r, s)
	prev := 0
	for _, l := range strings.Split(strings.TrimSpace(all), "\n") {
		var i int
		if _, err := fmt.Sscanf(l, "flood %d", &i); err != nil {
			continue
		}
		perFile := bound / (len(l) + 1)
		switch missing := i - prev - 1; {
		case prev == 0 || missing == 0:
		case missing < 0:
			t.Fatalf("line %d follows line %d in what Logs returns", i, prev)
		case missing < perFile-1:
			t.Fatalf("line %d follows line %d in what Logs returns: %d lines lost, less than a file of %d", i, prev, missing, perFile)
		default:
			lostFiles += missing / perFile
		}
		prev, last = i, i
	}
	if lostFiles > 0 {
		t.Logf("the reader fell %d files behind the flood", lostFiles)
	}
	written := int64(last) * 110
	t.Logf("flood wrote at least %d lines (%d KiB) through a %d KiB bound; largest file seen %d bytes", last, written>>10, bound>>10, largest)
	if written < 10*bound {
		t.Fatalf("the flood wrote only %d lines: the test proves nothing", last)
	}
	if err := r.Stop(ctxFor(t, time.Minute), s.InstanceID, 0); err != nil {
		t.Fatal(err)
	}
}

// The writer alone (cmd/zeitwork-logwriter, what bootstrap installs next to
// the zeitwork binary) is the shims' log writer as the zeitwork binary is:
// both streams land in the log, and the bound holds at every write.
func TestTheLogWriterAloneWritesAndBoundsTheLog(t *testing.T) {
	e := newEnv(t)
	alone := filepath.Join(t.TempDir(), "zeitwork-logwriter")
	build := exec.Command("go", "build", "-o", alone, "../../cmd/zeitwork-logwriter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/zeitwork-logwriter: %v\n%s", err, out)
	}
	const bound = 16 << 10
	r := e.runtime(t, func(c *runtime.Config) {
		c.LogWriter = alone
		c.LogMaxBytes = bound
		c.LogCheckInterval = time.Hour // the writer alone holds the bound
	})
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	logs := waitLogs(t, r, s, "listening on")
	if !strings.Contains(logs, "stderr is captured too") {
		t.Fatalf("stderr missing from the log:\n%s", logs)
	}
	// Its shim's writer is the one it was given.
	if !writerRuns(alone, s.InstanceID.String()) {
		t.Fatalf("no %s process writes %s's log", alone, s.InstanceID)
	}
	mustGet(t, url(s, "/flood"))
	logPath := filepath.Join(e.logDir, e.ns, s.InstanceID.String()+".log")
	rotated := false
	for range 100 {
		for _, p := range []string{logPath, logPath + ".1"} {
			if fi, err := os.Stat(p); err == nil && fi.Size() > bound {
				t.Fatalf("%s is %d bytes, over the bound of %d", filepath.Base(p), fi.Size(), bound)
			}
		}
		if _, err := os.Stat(logPath + ".1"); err == nil {
			rotated = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !rotated {
		t.Fatalf("a flood never rotated %s", logPath)
	}
}

// writerRuns says whether a process of the executable exe has an argument
// naming instance iid (the log writer's "<max>:<path>").
func writerRuns(exe, iid string) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if args[0] == exe && strings.Contains(string(cmdline), iid) {
			return true
		}
	}
	return false
}
