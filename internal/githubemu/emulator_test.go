package githubemu_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// appKey is made once: 2048-bit generation is slow.
var appKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func appKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey())})
}

const (
	appID         = 31337
	clientID      = "Iv1.emulatorclient"
	clientSecret  = "s3cret"
	webhookSecret = "hook-secret"
	callbackURL   = "http://zeitwork.test/v1/auth/github/callback"
)

// env is an emulator with one user (alice) who installed the App on her
// account with one repository, alice/app, whose main branch has two
// commits.
type env struct {
	emu           *githubemu.Emulator
	api, codeload string // base URLs
	inst          githubemu.Installation
	repo          githubemu.Repository
	first, head   string // commits of main
}

func newEnv(t *testing.T, options ...func(*githubemu.App)) *env {
	t.Helper()
	app := githubemu.App{
		ID: appID, Slug: "zeitwork-test", Name: "Zeitwork (test)", PublicKey: &appKey().PublicKey,
		ClientID: clientID, ClientSecret: clientSecret, CallbackURL: callbackURL, WebhookSecret: webhookSecret,
	}
	for _, o := range options {
		o(&app)
	}
	emu := githubemu.New(app)
	srv, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	emu.AddUser(githubemu.User{Login: "alice", Name: "Alice Liddell", Emails: []githubemu.Email{
		{Email: "alice@example.com", Primary: true, Verified: true, Visibility: "private"},
		{Email: "alice@old.example", Verified: false},
	}})
	emu.AddUser(githubemu.User{Login: "bob", Emails: []githubemu.Email{{Email: "bob@example.com", Primary: true, Verified: true}}})
	inst, err := emu.AddInstallation(githubemu.Installation{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null",
			"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com",
			"GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("init", "-q", "-b", "main")
	write("README.md", "hello\n")
	run("add", ".")
	run("commit", "-q", "-m", "first")
	first := run("rev-parse", "HEAD")
	write("main.go", "package main\n\nfunc main() {}\n")
	write("README.md", "hello, world\n")
	run("add", ".")
	run("commit", "-q", "-m", "add main")
	head := run("rev-parse", "HEAD")
	repo, err := emu.AddRepository(inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Private: true, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return &env{emu: emu, api: srv.APIURL, codeload: srv.CodeloadURL, inst: inst, repo: repo, first: first, head: head}
}

// noRedirects is a browser that stops at the first redirect, to read where
// GitHub sends it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
