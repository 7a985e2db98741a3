package githubemu_test

import (
	"archive/tar"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-github/v93/github"

	zgithub "github.com/zeitwork/zeitwork/internal/github"
	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// installationClient is go-github acting as the installation, with
// ghinstallation minting and renewing its token from the App's JWT.
func (e *env) installationClient(t *testing.T, installationID int64) *github.Client {
	t.Helper()
	tr, err := ghinstallation.New(http.DefaultTransport, appID, installationID, appKeyPEM())
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

func TestInstallationTokenAndRepositoriesWithGhinstallation(t *testing.T) {
	e := newEnv(t)
	for i := range 3 { // enough for two pages of two
		name := "extra" + strconv.Itoa(i)
		if _, err := e.emu.AddRepository(e.inst.ID, githubemu.Repository{Owner: "alice", Name: name, Dir: e.repo.Dir}); err != nil {
			t.Fatal(err)
		}
	}
	gh := e.installationClient(t, e.inst.ID)
	var names []string
	opts := &github.ListOptions{PerPage: 2}
	for {
		page, resp, err := gh.Apps.ListRepos(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if page.GetTotalCount() != 4 {
			t.Fatalf("total_count %d, want 4", page.GetTotalCount())
		}
		for _, r := range page.Repositories {
			names = append(names, r.GetFullName())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if got := strings.Join(names, " "); got != "alice/app alice/extra0 alice/extra1 alice/extra2" {
		t.Fatalf("repositories across pages: %s", got)
	}

	// Taken away from the installation, a repository is gone from the list.
	e.emu.RemoveRepository("alice/extra1")
	page, _, err := gh.Apps.ListRepos(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if page.GetTotalCount() != 3 || page.Repositories[2].GetFullName() != "alice/extra2" {
		t.Fatalf("after removing alice/extra1: %d repositories", page.GetTotalCount())
	}

	// The same App, as itself, reads the installation.
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, appID, appKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = e.api
	app, _ := github.NewClient(github.WithTransport(atr), github.WithURLs(new(e.api+"/"), nil))
	in, _, err := app.Apps.GetInstallation(t.Context(), e.inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if in.GetID() != e.inst.ID || in.GetAccount().GetLogin() != "alice" || in.GetAppID() != appID {
		t.Fatalf("installation %+v", in)
	}
	tok, _, err := app.Apps.CreateInstallationToken(t.Context(), e.inst.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.GetToken(), "ghs_") || time.Until(tok.GetExpiresAt().Time) < 50*time.Minute {
		t.Fatalf("token %q expiring %s", tok.GetToken(), tok.GetExpiresAt())
	}
}

func TestAppJWTIsChecked(t *testing.T) {
	e := newEnv(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	sign := func(key *rsa.PrivateKey, method jwt.SigningMethod, iss any, iat, exp time.Time) string {
		claims := jwt.MapClaims{"iss": iss, "iat": iat.Unix(), "exp": exp.Unix()}
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name   string
		jwt    string
		status int
	}{
		{"valid, iss as a number", sign(appKey(), jwt.SigningMethodRS256, appID, now.Add(-time.Minute), now.Add(5*time.Minute)), http.StatusCreated},
		{"valid, iss as a string", sign(appKey(), jwt.SigningMethodRS256, strconv.Itoa(appID), now.Add(-time.Minute), now.Add(5*time.Minute)), http.StatusCreated},
		{"another key", sign(other, jwt.SigningMethodRS256, appID, now.Add(-time.Minute), now.Add(5*time.Minute)), http.StatusUnauthorized},
		{"another app", sign(appKey(), jwt.SigningMethodRS256, appID+1, now.Add(-time.Minute), now.Add(5*time.Minute)), http.StatusUnauthorized},
		{"RS512", sign(appKey(), jwt.SigningMethodRS512, appID, now.Add(-time.Minute), now.Add(5*time.Minute)), http.StatusUnauthorized},
		{"lives over ten minutes", sign(appKey(), jwt.SigningMethodRS256, appID, now.Add(-time.Minute), now.Add(11*time.Minute)), http.StatusUnauthorized},
		{"expired", sign(appKey(), jwt.SigningMethodRS256, appID, now.Add(-10*time.Minute), now.Add(-2*time.Minute)), http.StatusUnauthorized},
		{"not a JWT", "ghs_whatever", http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			gh, _ := github.NewClient(github.WithAuthToken(c.jwt), github.WithURLs(new(e.api+"/"), nil))
			_, resp, err := gh.Apps.CreateInstallationToken(t.Context(), e.inst.ID, nil)
			if resp == nil || resp.StatusCode != c.status {
				t.Fatalf("status %v (err %v), want %d", resp, err, c.status)
			}
		})
	}
}

func TestSuspendedInstallationGetsNoToken(t *testing.T) {
	e := newEnv(t)
	e.emu.SetSuspended(e.inst.ID, true)
	_, _, err := e.installationClient(t, e.inst.ID).Apps.ListRepos(t.Context(), nil)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("suspended installation listed repositories: %v", err)
	}
}

// TestTarballWithTheZeitworkClient downloads with internal/github, which
// follows the redirect to codeload itself; codeload refuses any request
// carrying an Authorization header, so success also proves the token
// stayed behind.
func TestTarballWithTheZeitworkClient(t *testing.T) {
	e := newEnv(t)
	c, err := zgithub.New(zgithub.Config{BaseURL: e.api, AppID: appID, PrivateKey: appKeyPEM()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"main", e.head} {
		files := untar(t, c, e.inst.ID, "alice", "app", ref)
		prefix := "alice-app-" + e.head[:7] + "/"
		if files[prefix+"README.md"] != "hello, world\n" || files[prefix+"main.go"] == "" {
			t.Fatalf("tarball of %s: %v", ref, keys(files))
		}
	}
	old := untar(t, c, e.inst.ID, "alice", "app", e.first)
	if old["alice-app-"+e.first[:7]+"/README.md"] != "hello\n" {
		t.Fatalf("tarball of the first commit: %v", keys(old))
	}

	for _, c2 := range []struct{ owner, repo, ref string }{
		{"alice", "app", "no-such-branch"},
		{"alice", "nope", "main"},
		{"bob", "app", "main"},
	} {
		_, err := c.DownloadTarball(t.Context(), e.inst.ID, c2.owner, c2.repo, c2.ref)
		if !errors.Is(err, zgithub.ErrNotFound) {
			t.Errorf("%s/%s@%s: %v, want not found", c2.owner, c2.repo, c2.ref, err)
		}
	}

	// A repository of another installation is not this one's to read.
	e.emu.AddUser(githubemu.User{Login: "carol"})
	other, _ := e.emu.AddInstallation(githubemu.Installation{Account: "carol"})
	if _, err := e.emu.AddRepository(other.ID, githubemu.Repository{Owner: "carol", Name: "secret", Dir: e.repo.Dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DownloadTarball(t.Context(), e.inst.ID, "carol", "secret", "main"); !errors.Is(err, zgithub.ErrNotFound) {
		t.Fatalf("another installation's repository: %v, want not found", err)
	}
}

func TestCodeloadRefusesAnAuthorizationHeader(t *testing.T) {
	e := newEnv(t)
	gh := e.installationClient(t, e.inst.ID)
	// go-github's GetArchiveLink reads the redirect without following it.
	link, _, err := gh.Repositories.GetArchiveLink(t.Context(), "alice", "app", github.Tarball, &github.RepositoryContentGetOptions{Ref: "main"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.String(), e.codeload+"/alice/app/legacy.tar.gz/main?token=") {
		t.Fatalf("archive link %s", link)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, link.String(), nil)
	req.Header.Set("Authorization", "Bearer ghs_leaked")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("codeload with a token: status %d, want 400", resp.StatusCode)
	}
}

func untar(t *testing.T, c *zgithub.Client, inst int64, owner, repo, ref string) map[string]string {
	t.Helper()
	body, err := c.DownloadTarball(t.Context(), inst, owner, repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	zr, err := gzip.NewReader(body)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
