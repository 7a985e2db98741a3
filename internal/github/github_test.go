package github_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/github"
	"github.com/zeitwork/zeitwork/internal/source"
)

const (
	appID        = 4242
	installation = 77
)

func newClient(t *testing.T, f *fakeGitHub, key []byte) *github.Client {
	t.Helper()
	c, err := github.New(github.Config{BaseURL: f.api.URL, AppID: appID, PrivateKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gitRepo commits a small app in a fresh repository and returns what
// GitHub's tarball endpoint would serve for it, and the commit.
func gitRepo(t *testing.T, owner, repo string) ([]byte, string) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"package.json":   `{"scripts":{"start":"node server.js"}}`,
		"server.js":      "require('http').createServer().listen(process.env.PORT)\n",
		"bin/entrypoint": "#!/bin/sh\nexec node server.js\n",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "bin/entrypoint"), 0o755)
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "initial")
	sha := strings.TrimSpace(string(git(t, dir, "rev-parse", "HEAD")))
	tgz := git(t, dir, "archive", "--format=tar.gz", "--prefix="+owner+"-"+repo+"-"+sha[:7]+"/", "HEAD")
	return tgz, sha
}

func git(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func TestDownloadTarball(t *testing.T) {
	for name, key := range map[string][]byte{"PKCS#1 key": pkcs1PEM(appKey()), "PKCS#8 key": pkcs8PEM(appKey())} {
		t.Run(name, func(t *testing.T) {
			f := newFakeGitHub(t, appID)
			tgz, sha := gitRepo(t, "acme", "app")
			f.addRepo(installation, "acme/app", sha, tgz)
			c := newClient(t, f, key)

			body, err := c.DownloadTarball(t.Context(), installation, "acme", "app", sha)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tgz) {
				t.Fatalf("got %d bytes, want the %d bytes of git archive", len(got), len(tgz))
			}
			f.mu.Lock()
			seen := f.codeloadAuth
			f.mu.Unlock()
			if len(seen) != 1 || seen[0] != "" {
				t.Errorf("codeload saw Authorization %q: the token followed the redirect", seen)
			}

			// And it is what source.Unpack expects.
			dst := filepath.Join(t.TempDir(), "ctx")
			stats, err := source.Unpack(t.Context(), bytes.NewReader(got), dst, source.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if stats.StrippedPrefix != "acme-app-"+sha[:7] || stats.Files != 3 {
				t.Errorf("stats = %+v", stats)
			}
			if fi, err := os.Stat(filepath.Join(dst, "bin/entrypoint")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("bin/entrypoint: %v, %v", fi, err)
			}
		})
	}
}

// The body streams: DownloadTarball returns, and the first bytes can be
// read, while codeload is still sending.
func TestDownloadTarballStreams(t *testing.T) {
	f := newFakeGitHub(t, appID)
	f.addRepo(installation, "acme/app", "main", nil)
	release := make(chan struct{})
	gaveUp := make(chan bool, 1)
	f.setCodeloadHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Write([]byte("first part;"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
			gaveUp <- false
		case <-time.After(10 * time.Second):
			gaveUp <- true
		}
		w.Write([]byte("second part"))
		return true
	})
	c := newClient(t, f, pkcs1PEM(appKey()))
	body, err := c.DownloadTarball(t.Context(), installation, "acme", "app", "main")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	first := make([]byte, len("first part;"))
	if _, err := io.ReadFull(body, first); err != nil {
		t.Fatal(err)
	}
	close(release)
	rest, err := io.ReadAll(body)
	if err != nil || string(first)+string(rest) != "first part;second part" {
		t.Fatalf("body %q%q, %v", first, rest, err)
	}
	if <-gaveUp {
		t.Fatal("the download was buffered: codeload had to finish before the caller saw any byte")
	}
}

func TestInstallationTokenCache(t *testing.T) {
	f := newFakeGitHub(t, appID)
	f.addRepo(installation, "acme/app", "main", []byte("x"))
	c := newClient(t, f, pkcs1PEM(appKey()))

	// Concurrent builds of one installation share one token request.
	var wg sync.WaitGroup
	tokens := make([]github.Token, 16)
	for i := range tokens {
		wg.Go(func() {
			tok, err := c.InstallationToken(t.Context(), installation)
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok
		})
	}
	wg.Wait()
	if n := f.tokenRequests.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	for _, tok := range tokens {
		if tok.Value != tokens[0].Value || tok.Value == "" {
			t.Fatalf("tokens differ: %q vs %q", tok.Value.Reveal(), tokens[0].Value.Reveal())
		}
	}
	if d := time.Until(tokens[0].ExpiresAt); d < 55*time.Minute || d > time.Hour {
		t.Errorf("expires in %s", d)
	}
	for range 3 {
		body, err := c.DownloadTarball(t.Context(), installation, "acme", "app", "main")
		if err != nil {
			t.Fatal(err)
		}
		body.Close()
	}
	if n := f.tokenRequests.Load(); n != 1 {
		t.Errorf("%d token requests after downloads, want 1", n)
	}

	// A token about to expire is renewed rather than handed out.
	f.setTokenTTL(2 * time.Minute)
	c2 := newClient(t, f, pkcs1PEM(appKey()))
	a, _ := c2.InstallationToken(t.Context(), installation)
	b, _ := c2.InstallationToken(t.Context(), installation)
	if a.Value == b.Value || f.tokenRequests.Load() != 3 {
		t.Errorf("a token 2 minutes from expiry was reused (requests: %d)", f.tokenRequests.Load())
	}

	// A revoked token is forgotten after GitHub refuses it.
	f.setTokenTTL(time.Hour)
	tok, _ := c.InstallationToken(t.Context(), installation)
	f.revoke(tok.Value.Reveal())
	_, err := c.DownloadTarball(t.Context(), installation, "acme", "app", "main")
	if !errors.Is(err, github.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	body, err := c.DownloadTarball(t.Context(), installation, "acme", "app", "main")
	if err != nil {
		t.Fatalf("after a revoked token: %v", err)
	}
	body.Close()
}

func TestInstallationTokenWaitRespectsContext(t *testing.T) {
	f := newFakeGitHub(t, appID)
	f.addRepo(installation, "acme/app", "main", nil)
	block := make(chan struct{})
	f.setAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
		<-block
		return false
	})
	defer close(block)
	c := newClient(t, f, pkcs1PEM(appKey()))
	go c.InstallationToken(t.Context(), installation) // holds the minting slot until block closes
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.InstallationToken(ctx, installation); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waited %s for another caller's token request despite the deadline", d)
	}
}

func TestErrors(t *testing.T) {
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other := pkcs1PEM(otherKey)
	f := newFakeGitHub(t, appID)
	tgz, sha := gitRepo(t, "acme", "app")
	f.addRepo(installation, "acme/app", sha, tgz)
	f.addRepo(installation+1, "other/secret", sha, tgz)

	for _, tc := range []struct {
		name         string
		key          []byte
		installation int64
		owner, repo  string
		hook         func(http.ResponseWriter, *http.Request) bool
		want         error
		wantMsg      string
		retryAfter   time.Duration
	}{
		{name: "repository of another installation", owner: "other", repo: "secret",
			want: github.ErrNotFound, wantMsg: "repository not found or the installation has no access"},
		{name: "no such repository", owner: "acme", repo: "nope",
			want: github.ErrNotFound, wantMsg: "repository not found or the installation has no access"},
		{name: "no such installation", installation: 999, owner: "acme", repo: "app",
			want: github.ErrNotFound, wantMsg: "installation not found"},
		{name: "wrong private key", key: other, owner: "acme", repo: "app",
			want: github.ErrUnauthorized, wantMsg: "JWT"},
		{name: "primary rate limit", owner: "acme", repo: "app",
			hook: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/tarball/") {
					return false
				}
				w.Header().Set("X-RateLimit-Remaining", "0")
				w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(90*time.Second).Unix(), 10))
				ghError(w, http.StatusForbidden, "API rate limit exceeded for installation ID 77.")
				return true
			},
			want: github.ErrRateLimited, wantMsg: "rate limited", retryAfter: 90 * time.Second},
		{name: "secondary rate limit", owner: "acme", repo: "app",
			hook: func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", "30")
				ghError(w, http.StatusTooManyRequests, "You have exceeded a secondary rate limit.")
				return true
			},
			want: github.ErrRateLimited, wantMsg: "retry in 30s", retryAfter: 30 * time.Second},
		{name: "forbidden", owner: "acme", repo: "app",
			hook: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/tarball/") {
					return false
				}
				ghError(w, http.StatusForbidden, "Resource not accessible by integration")
				return true
			},
			want: github.ErrForbidden, wantMsg: "may not read this repository's contents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key == nil {
				tc.key = pkcs1PEM(appKey())
			}
			if tc.installation == 0 {
				tc.installation = installation
			}
			f.setAPIHook(tc.hook)
			c := newClient(t, f, tc.key)
			body, err := c.DownloadTarball(t.Context(), tc.installation, tc.owner, tc.repo, sha)
			if err == nil {
				body.Close()
				t.Fatal("no error")
			}
			t.Log(err)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v saying %q", err, tc.want, tc.wantMsg)
			}
			var ge *github.Error
			if !errors.As(err, &ge) {
				t.Fatalf("err is %T, want *github.Error", err)
			}
			if d := ge.RetryAfter - tc.retryAfter; d < -2*time.Second || d > 0 {
				t.Errorf("RetryAfter = %s, want about %s", ge.RetryAfter, tc.retryAfter)
			}
		})
	}
}

func TestRefusesDowngradeRedirect(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("plain-HTTP server was reached with Authorization %q", r.Header.Get("Authorization"))
	}))
	defer plain.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/access_tokens") {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"token":"ghs_x","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
			return
		}
		http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
	}))
	defer tls.Close()
	c, err := github.New(github.Config{BaseURL: tls.URL, AppID: appID, PrivateKey: pkcs1PEM(appKey()), HTTPClient: tls.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DownloadTarball(t.Context(), installation, "acme", "app", "main"); err == nil || !strings.Contains(err.Error(), "refusing redirect") {
		t.Fatalf("err = %v, want a refused redirect", err)
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]github.Config{
		"no app id":    {PrivateKey: pkcs1PEM(appKey())},
		"no key":       {AppID: 1},
		"garbage key":  {AppID: 1, PrivateKey: []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")},
		"bad base URL": {AppID: 1, PrivateKey: pkcs1PEM(appKey()), BaseURL: "api.github.com"},
	} {
		if _, err := github.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDownloadTarballValidatesArguments(t *testing.T) {
	f := newFakeGitHub(t, appID)
	c := newClient(t, f, pkcs1PEM(appKey()))
	for _, args := range [][3]string{{"", "app", "main"}, {"acme", "..", "main"}, {"acme", "a/b", "main"}, {"acme", "app", "../../x"}, {"acme", "app", ""}} {
		if _, err := c.DownloadTarball(t.Context(), installation, args[0], args[1], args[2]); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	if n := f.tokenRequests.Load(); n != 0 {
		t.Errorf("%d requests for invalid arguments", n)
	}
}
