package githubapp_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zeitwork/zeitwork/internal/githubapp"
	"github.com/zeitwork/zeitwork/internal/githubemu"
)

var key = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// counting counts the installation tokens minted through it.
type counting struct{ mints atomic.Int32 }

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/access_tokens") {
		c.mints.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

type env struct {
	emu   *githubemu.Emulator
	app   *githubapp.App
	tr    *counting
	inst  githubemu.Installation
	repo  githubemu.Repository
	head  string
	other githubemu.Installation
}

func newEnv(t *testing.T) *env {
	t.Helper()
	emu := githubemu.New(githubemu.App{ID: 99, Slug: "zw", PublicKey: &key().PublicKey})
	srv, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tr := &counting{}
	app, err := githubapp.New(githubapp.Config{
		ID: 99, Slug: "zw", APIURL: srv.APIURL, WebURL: srv.APIURL, Transport: tr,
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key())}),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "hello"}} {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null",
			"GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	head, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{emu: emu, app: app, tr: tr, head: strings.TrimSpace(string(head))}
	emu.AddUser(githubemu.User{Login: "alice"})
	emu.AddUser(githubemu.User{Login: "acme", Organization: true})
	if e.inst, err = emu.AddInstallation(githubemu.Installation{Account: "alice"}); err != nil {
		t.Fatal(err)
	}
	if e.other, err = emu.AddInstallation(githubemu.Installation{Account: "acme"}); err != nil {
		t.Fatal(err)
	}
	if e.repo, err = emu.AddRepository(e.inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err = emu.AddRepository(e.other.ID, githubemu.Repository{Owner: "acme", Name: "site", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestInstallationTokenIsMintedOncePerInstallation(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for range 3 {
		page, err := e.app.Repositories(ctx, e.inst.ID, 1, 30)
		if err != nil || page.Total != 1 || page.Repositories[0].FullName != "alice/app" || page.NextPage != 0 {
			t.Fatalf("repositories: %+v, %v", page, err)
		}
	}
	r, err := e.app.Repository(ctx, e.inst.ID, e.repo.ID, "")
	if err != nil || r.FullName != "alice/app" || r.DefaultBranch != "main" {
		t.Fatalf("by id: %+v, %v", r, err)
	}
	if r, err = e.app.Repository(ctx, e.inst.ID, 0, "alice/app"); err != nil || r.ID != e.repo.ID {
		t.Fatalf("by name: %+v, %v", r, err)
	}
	c, err := e.app.BranchHead(ctx, e.inst.ID, "alice/app", "main")
	if err != nil || c.SHA != e.head || c.Message != "hello" {
		t.Fatalf("head: %+v, %v", c, err)
	}
	if n := e.tr.mints.Load(); n != 1 {
		t.Fatalf("%d tokens minted for one installation", n)
	}
	if _, err := e.app.Repositories(ctx, e.other.ID, 1, 30); err != nil {
		t.Fatal(err)
	}
	if n := e.tr.mints.Load(); n != 2 {
		t.Fatalf("%d tokens minted for two installations", n)
	}
}

func TestBranchesAndCommits(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	git := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("git", append([]string{"-C", e.repo.Dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	git("branch", "feature")
	git("branch", "zz-other")

	page, err := e.app.Branches(ctx, e.inst.ID, "alice/app", 1, 2)
	if err != nil || len(page.Branches) != 2 || page.Branches[0] != (githubapp.Branch{Name: "feature", SHA: e.head}) || page.Branches[1].Name != "main" || page.NextPage != 2 {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	if page, err = e.app.Branches(ctx, e.inst.ID, "alice/app", 2, 2); err != nil || len(page.Branches) != 1 || page.Branches[0].Name != "zz-other" || page.NextPage != 0 {
		t.Fatalf("last page: %+v, %v", page, err)
	}
	// The head of three branches: the preferred one when it is among them.
	for prefer, want := range map[string]string{"main": "main", "zz-other": "zz-other", "gone": "feature"} {
		info, err := e.app.DescribeCommit(ctx, e.inst.ID, "alice/app", e.head, prefer)
		if err != nil || info.Message != "hello" || info.Branch != want {
			t.Errorf("DescribeCommit(prefer %s) = %+v, %v; want branch %s", prefer, info, err, want)
		}
	}
	for name, err := range map[string]error{
		"an unknown commit":               second(e.app.DescribeCommit(ctx, e.inst.ID, "alice/app", strings.Repeat("0", 40), "main")),
		"another installation's commit":   second(e.app.DescribeCommit(ctx, e.inst.ID, "acme/site", e.head, "main")),
		"another installation's branches": second(e.app.Branches(ctx, e.inst.ID, "acme/site", 1, 30)),
		"a malformed name":                second(e.app.Branches(ctx, e.inst.ID, "acme", 1, 30)),
	} {
		if !errors.Is(err, githubapp.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
}

func TestErrorsAreClassified(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for name, err := range map[string]error{
		"another installation's repository": second(e.app.Repository(ctx, e.inst.ID, 0, "acme/site")),
		"a malformed name":                  second(e.app.Repository(ctx, e.inst.ID, 0, "acme")),
		"an unknown branch":                 second(e.app.BranchHead(ctx, e.inst.ID, "alice/app", "nope")),
		"an unknown installation":           second(e.app.Installation(ctx, 424242)),
		"an unknown installation's token":   second(e.app.Repositories(ctx, 424242, 1, 30)),
	} {
		if !errors.Is(err, githubapp.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}

	in, err := e.app.Installation(ctx, e.other.ID)
	if err != nil || in.AccountLogin != "acme" || in.AccountType != "Organization" || in.Suspended {
		t.Fatalf("installation: %+v, %v", in, err)
	}
	// Suspended with a token cached, and then with none.
	if _, err := e.app.Repositories(ctx, e.inst.ID, 1, 30); err != nil {
		t.Fatal(err)
	}
	e.emu.SetSuspended(e.inst.ID, true)
	for range 2 {
		if _, err := e.app.Repositories(ctx, e.inst.ID, 1, 30); !errors.Is(err, githubapp.ErrSuspended) {
			t.Fatalf("suspended: %v", err)
		}
	}
	if in, err := e.app.Installation(ctx, e.inst.ID); err != nil || !in.Suspended {
		t.Fatalf("suspended installation: %+v, %v", in, err)
	}
	e.emu.SetSuspended(e.inst.ID, false)
	if _, err := e.app.Repositories(ctx, e.inst.ID, 1, 30); err != nil {
		t.Fatalf("unsuspended: %v", err)
	}
}

func TestInstallURL(t *testing.T) {
	app, err := githubapp.New(githubapp.Config{ID: 1, Slug: "my app", APIURL: "https://api.github.com", WebURL: "https://github.com/",
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key())})})
	if err != nil {
		t.Fatal(err)
	}
	if got := app.InstallURL("a+b/c"); got != "https://github.com/apps/my%20app/installations/new?state=a%2Bb%2Fc" {
		t.Fatalf("install URL %s", got)
	}
}

func second[T any](_ T, err error) error { return err }
