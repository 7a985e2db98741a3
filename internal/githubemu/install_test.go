package githubemu_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v93/github"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

const setupURL = "http://zeitwork.test/v1/github/setup"

// installPage opens the App's install page with state and returns where
// the emulator sends the browser.
func (e *env) installPage(t *testing.T, slug, state string) (int, *url.URL) {
	t.Helper()
	res, err := noRedirects.Get(e.api + "/apps/" + slug + "/installations/new?state=" + url.QueryEscape(state))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, _ := res.Location()
	return res.StatusCode, loc
}

func TestInstallPageReturnsToTheSetupURL(t *testing.T) {
	e := newEnv(t, func(a *githubemu.App) { a.SetupURL = setupURL })
	e.emu.ApproveAs("alice")

	// Installed on alice's account already: GitHub opens its settings.
	status, loc := e.installPage(t, "zeitwork-test", "st/ate")
	q := loc.Query()
	if status != http.StatusFound || loc.Scheme+"://"+loc.Host+loc.Path != setupURL ||
		q.Get("state") != "st/ate" || q.Get("setup_action") != "update" || q.Get("installation_id") != strconv.FormatInt(e.inst.ID, 10) || q.Has("code") {
		t.Fatalf("back to %d %s", status, loc)
	}

	// On an organisation alice belongs to: a new installation.
	e.emu.AddUser(githubemu.User{Login: "acme", Organization: true, Members: []string{"alice"}})
	e.emu.InstallOn("acme")
	_, loc = e.installPage(t, "zeitwork-test", "s")
	id, _ := strconv.ParseInt(loc.Query().Get("installation_id"), 10, 64)
	if loc.Query().Get("setup_action") != "install" || id == 0 || id == e.inst.ID {
		t.Fatalf("install on acme: back to %s", loc)
	}
	in, _, err := e.appClient(t).Apps.GetInstallation(t.Context(), id)
	if err != nil || in.GetAccount().GetLogin() != "acme" || in.GetAccount().GetType() != "Organization" {
		t.Fatalf("the new installation: %v, %v", in, err)
	}

	// bob is no member of acme; another App's page is GitHub's 404.
	e.emu.ApproveAs("bob")
	if status, _ := e.installPage(t, "zeitwork-test", "s"); status != http.StatusForbidden {
		t.Fatalf("bob installing on acme: %d", status)
	}
	if status, _ := e.installPage(t, "other-app", "s"); status != http.StatusNotFound {
		t.Fatalf("another App's page: %d", status)
	}
}

// With "request user authorization during installation", the browser
// comes back to the callback URL with a code for the installing user, and
// that user's token lists the installation.
func TestInstallPageAuthorizesTheUser(t *testing.T) {
	e := newEnv(t, func(a *githubemu.App) { a.AuthorizeOnInstall = true })
	e.emu.ApproveAs("alice")
	_, loc := e.installPage(t, "zeitwork-test", "s")
	if loc.Scheme+"://"+loc.Host+loc.Path != callbackURL || loc.Query().Get("code") == "" {
		t.Fatalf("back to %s", loc)
	}
	cfg := e.oauthConfig()
	tok, err := cfg.Exchange(t.Context(), loc.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	gh, err := github.NewClient(github.WithHTTPClient(cfg.Client(t.Context(), tok)), github.WithURLs(new(e.api+"/"), nil))
	if err != nil {
		t.Fatal(err)
	}
	insts, _, err := gh.Apps.ListUserInstallations(t.Context(), nil)
	if err != nil || len(insts) != 1 || strconv.FormatInt(insts[0].GetID(), 10) != loc.Query().Get("installation_id") {
		t.Fatalf("alice's installations: %v, %v", insts, err)
	}
}

func TestRepositoryAndBranchWithGoGitHub(t *testing.T) {
	e := newEnv(t)
	gh := e.installationClient(t, e.inst.ID)
	ctx := t.Context()

	r, _, err := gh.Repositories.Get(ctx, "alice", "app")
	if err != nil || r.GetID() != e.repo.ID || r.GetFullName() != "alice/app" || r.GetDefaultBranch() != "main" || !r.GetPrivate() {
		t.Fatalf("by name: %v, %v", r, err)
	}
	if byID, _, err := gh.Repositories.GetByID(ctx, e.repo.ID); err != nil || byID.GetFullName() != "alice/app" {
		t.Fatalf("by id: %v, %v", byID, err)
	}
	b, _, err := gh.Repositories.GetBranch(ctx, "alice", "app", "main", 0)
	if err != nil || b.GetName() != "main" || b.GetCommit().GetSHA() != e.head || b.GetCommit().GetCommit().GetMessage() != "add main" ||
		len(b.GetCommit().Parents) != 1 || b.GetCommit().Parents[0].GetSHA() != e.first {
		t.Fatalf("branch: %v, %v", b, err)
	}

	// What the installation cannot see, and a branch that does not exist,
	// are GitHub's 404s.
	other, err := e.emu.AddInstallation(githubemu.Installation{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.emu.AddRepository(other.ID, githubemu.Repository{Owner: "bob", Name: "secret", Dir: e.repo.Dir}); err != nil {
		t.Fatal(err)
	}
	var ge *github.ErrorResponse
	if _, _, err := gh.Repositories.Get(ctx, "bob", "secret"); !errors.As(err, &ge) || ge.Response.StatusCode != http.StatusNotFound {
		t.Fatalf("another installation's repository by name: %v", err)
	}
	if _, _, err := gh.Repositories.GetByID(ctx, e.repo.ID+1_000_000); !errors.As(err, &ge) || ge.Response.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown id: %v", err)
	}
	if _, resp, err := gh.Repositories.GetBranch(ctx, "alice", "app", "nope", 0); err == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown branch: %v", err)
	}
	if _, resp, err := gh.Repositories.GetBranch(ctx, "bob", "secret", "main", 0); err == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another installation's branch: %v", err)
	}

	// Every field the emulator sends is one go-github knows, but the
	// branch's _links, protection.enabled and its tree's url, which GitHub sends
	// and go-github lacks.
	hc := gh.Client()
	for path, v := range map[string]any{
		"/repos/alice/app": &github.Repository{},
		"/repositories/" + strconv.FormatInt(e.repo.ID, 10): &github.Repository{},
		"/repos/alice/app/branches/main":                    &github.Branch{},
	} {
		res, err := hc.Get(e.api + path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		err = json.NewDecoder(res.Body).Decode(&m)
		res.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, p := range []string{"_links", "protection.enabled", "commit.commit.tree.url"} {
			drop(m, p)
		}
		body, _ := json.Marshal(m)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Errorf("%s: go-github's %T: %v", path, v, err)
		}
	}
}

func TestBranchesAndCommitsWithGoGitHub(t *testing.T) {
	e := newEnv(t)
	gh := e.installationClient(t, e.inst.ID)
	ctx := t.Context()
	// Two more branches: feature at the first commit, and 25 others to page through.
	names := []string{"feature"}
	for i := range 25 {
		names = append(names, fmt.Sprintf("z%02d", i))
	}
	for _, n := range names {
		if out, err := exec.Command("git", "-C", e.repo.Dir, "branch", n, e.first).CombinedOutput(); err != nil {
			t.Fatalf("git branch %s: %v %s", n, err, out)
		}
	}

	var got []*github.Branch
	opts := &github.BranchListOptions{ListOptions: github.ListOptions{PerPage: 10}}
	for pages := 0; pages < 10; pages++ {
		bs, resp, err := gh.Repositories.ListBranches(ctx, "alice", "app", opts)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bs...)
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if len(got) != 27 || got[0].GetName() != "feature" || got[1].GetName() != "main" || got[1].GetCommit().GetSHA() != e.head ||
		got[0].GetCommit().GetSHA() != e.first || got[26].GetName() != "z24" {
		t.Fatalf("ListBranches: %d branches, first %v", len(got), got[:min(2, len(got))])
	}

	c, _, err := gh.Repositories.GetCommit(ctx, "alice", "app", e.first, nil)
	if err != nil || c.GetSHA() != e.first || c.GetCommit().GetMessage() != "first" || c.GetCommit().GetAuthor().GetName() != "Alice" {
		t.Fatalf("GetCommit(first): %v, %v", c, err)
	}
	if c, _, err := gh.Repositories.GetCommit(ctx, "alice", "app", "main", nil); err != nil || c.GetSHA() != e.head {
		t.Fatalf("GetCommit(main): %v, %v", c, err)
	}
	var ge *github.ErrorResponse
	if _, _, err := gh.Repositories.GetCommit(ctx, "alice", "app", strings.Repeat("0", 40), nil); !errors.As(err, &ge) || ge.Response.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("an unknown commit: %v", err)
	}

	heads, _, err := gh.Repositories.ListBranchesHeadCommit(ctx, "alice", "app", e.head)
	if err != nil || len(heads) != 1 || heads[0].GetName() != "main" {
		t.Fatalf("branches where %s is head: %v, %v", e.head[:7], heads, err)
	}
	if heads, _, err := gh.Repositories.ListBranchesHeadCommit(ctx, "alice", "app", e.first); err != nil || len(heads) != 26 {
		t.Fatalf("branches where the first commit is head: %d, %v", len(heads), err)
	}

	// Another installation's repository is GitHub's 404.
	other, err := e.emu.AddInstallation(githubemu.Installation{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.emu.AddRepository(other.ID, githubemu.Repository{Owner: "bob", Name: "secret", Dir: e.repo.Dir}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gh.Repositories.ListBranches(ctx, "bob", "secret", nil); !errors.As(err, &ge) || ge.Response.StatusCode != http.StatusNotFound {
		t.Fatalf("another installation's branches: %v", err)
	}
	if _, _, err := gh.Repositories.GetCommit(ctx, "bob", "secret", e.head, nil); !errors.As(err, &ge) || ge.Response.StatusCode != http.StatusNotFound {
		t.Fatalf("another installation's commit: %v", err)
	}
}

// appClient is go-github acting as the App itself (its JWT).
func (e *env) appClient(t *testing.T) *github.Client {
	t.Helper()
	tr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, appID, appKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	tr.BaseURL = e.api
	gh, err := github.NewClient(github.WithTransport(tr), github.WithURLs(new(e.api+"/"), nil))
	if err != nil {
		t.Fatal(err)
	}
	return gh
}
