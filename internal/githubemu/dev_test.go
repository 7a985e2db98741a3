package githubemu_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// TestDevDeliversGitPushes: a git push into a repository under the dev
// emulator's directory reaches the webhook as a signed push event naming
// the repository's stable id; a restarted emulator delivers what was
// pushed while it was down, and nothing twice.
func TestDevDeliversGitPushes(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	app := githubemu.App{ID: 7, Slug: "zeitwork-dev", PublicKey: &key.PublicKey, ClientID: "Iv1.dev", ClientSecret: "s", WebhookSecret: "hook"}
	type push struct {
		repoID, installation int64
		ref, before, after   string
	}
	var mu sync.Mutex
	var got []push
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Hub-Signature-256") != githubemu.Sign("hook", body) || r.Header.Get("X-GitHub-Event") != "push" {
			t.Errorf("delivery %s signed %q", r.Header.Get("X-GitHub-Event"), r.Header.Get("X-Hub-Signature-256"))
		}
		var p struct {
			Ref, Before, After string
			Repository         struct{ ID int64 }
			Installation       struct{ ID int64 }
		}
		json.Unmarshal(body, &p)
		mu.Lock()
		got = append(got, push{p.Repository.ID, p.Installation.ID, p.Ref, p.Before, p.After})
		mu.Unlock()
	}))
	defer hook.Close()
	dir := t.TempDir()
	start := func() func() {
		d, err := githubemu.ListenDev(githubemu.DevConfig{App: app, Dir: dir, APIAddr: "127.0.0.1:0", CodeloadAddr: "127.0.0.1:0",
			WebhookURL: hook.URL, PollInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	waitFor := func(n int) []push {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			out := append([]push(nil), got...)
			mu.Unlock()
			if len(out) >= n || time.Now().After(deadline) {
				if len(out) != n {
					t.Fatalf("%d deliveries, want %d: %+v", len(out), n, out)
				}
				return out
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	stop := start()
	bare := filepath.Join(dir, "repos", "app.git")
	run(t, "", "git", "init", "-q", "--bare", "-b", "main", bare)
	work := t.TempDir()
	run(t, "", "git", "clone", "-q", bare, work)
	commit := func(msg string) string {
		os.WriteFile(filepath.Join(work, "README"), []byte(msg), 0o644)
		run(t, work, "git", "add", ".")
		run(t, work, "git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", msg)
		run(t, work, "git", "push", "-q", "origin", "main")
		return strings.TrimSpace(run(t, work, "git", "rev-parse", "HEAD"))
	}
	first := commit("one")
	p := waitFor(1)[0]
	want := push{githubemu.DevRepositoryID("app"), githubemu.DevInstallationID, "refs/heads/main", strings.Repeat("0", 40), first}
	if p != want {
		t.Fatalf("first push %+v, want %+v", p, want)
	}
	// The hook has the delivery before the emulator has its answer and
	// records the head as delivered: stopped in between, it would deliver
	// again (at least once, like GitHub). Stop once it is recorded.
	deadline := time.Now().Add(20 * time.Second)
	for b, _ := os.ReadFile(filepath.Join(dir, "pushed.json")); !strings.Contains(string(b), first); b, _ = os.ReadFile(filepath.Join(dir, "pushed.json")) {
		if time.Now().After(deadline) {
			t.Fatalf("the first head was never recorded as delivered: %s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()

	second := commit("two") // while the emulator is down
	stop = start()
	defer stop()
	if p := waitFor(2)[1]; p.before != first || p.after != second || p.repoID != want.repoID {
		t.Fatalf("push after the restart %+v, want %s..%s", p, first, second)
	}
	time.Sleep(100 * time.Millisecond) // several scans: none may deliver again
	waitFor(2)
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
