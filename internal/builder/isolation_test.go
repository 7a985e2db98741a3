package builder_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/github"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/id"
)

// A build never pushes with the builder's own registry credentials: without
// a way to mint its project's, it fails before its source is fetched, and
// says why. With one, it asks for its own project's.
func TestBuildRefusesWithoutProjectCredentials(t *testing.T) {
	h := newHarness(t, treeFetcher{"Dockerfile": "FROM scratch\nCOPY Dockerfile /Dockerfile\n"})
	h.svc.Config.AnonymousRegistry = false
	h.svc.Config.Registry.Username, h.svc.Config.Registry.Password = "builder", "builder-own-password"
	r := h.request(t)
	ctx := context.Background()
	if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
		t.Fatalf("missing credentials are final, not retried: %v", err)
	}
	d, b, logs := h.state(t, r)
	all := strings.Join(logs, "\n")
	if d.Status != string(deployment.StatusFailed) || b.Status != build.StatusFailed || d.FailureReason == nil ||
		!strings.Contains(*d.FailureReason, "no registry credentials for the project") || d.ImageID != nil {
		t.Fatalf("deployment %s (%v), build %s, image %v; want failed for want of credentials", d.Status, d.FailureReason, b.Status, d.ImageID)
	}
	if strings.Contains(all, "fetching source") || strings.Contains(all, "pushed ") || strings.Contains(all, "builder-own-password") {
		t.Fatalf("build log:\n%s", all)
	}

	// A minter that gives nothing is no better.
	h.svc.Config.Credentials = func(uuid.UUID, time.Duration) (string, string) { return "", "" }
	r = h.request(t)
	if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	if d, _, _ := h.state(t, r); d.Status != string(deployment.StatusFailed) {
		t.Fatalf("empty credentials: deployment %s", d.Status)
	}

	// With a minter, the build gets its own project's credentials (the
	// test registry takes any).
	var asked []uuid.UUID
	h.svc.Config.Credentials = func(project uuid.UUID, _ time.Duration) (string, string) {
		asked = append(asked, project)
		return "project-" + project.String(), "minted"
	}
	r = h.request(t)
	if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
		t.Fatal(err)
	}
	if d, _, logs := h.state(t, r); d.Status != string(deployment.StatusDeploying) || len(asked) != 1 || asked[0] != h.project {
		t.Fatalf("with a minter: deployment %s, credentials asked for %v (project %s)\n%s", d.Status, asked, h.project, strings.Join(logs, "\n"))
	}
}

// Cache mounts (RUN --mount=type=cache) are kept by buildkitd across builds:
// a project's later builds see what its earlier ones left there, another
// project's builds do not.
func TestCacheMountsAreNotSharedBetweenProjects(t *testing.T) {
	base := shellBase(t)
	nonce := id.New().String()
	secret := "secret-of-a-" + nonce
	a := newHarness(t, treeFetcher{"Dockerfile": "FROM " + base + "\nRUN --mount=type=cache,target=/cache echo " + secret + " > /cache/secret\n"})
	// What the step prints is not in its command line (which the log shows
	// too): "no-$((6*7))-cache" prints as no-42-cache.
	reader := func(who string) treeFetcher {
		return treeFetcher{"Dockerfile": "FROM " + base + "\nRUN --mount=type=cache,target=/cache cat /cache/secret || echo no-$((6*7))-cache # " + who + nonce + "\n"}
	}
	ctx := context.Background()
	run := func(h *harness) []string {
		t.Helper()
		r := h.request(t)
		if err := h.svc.Run(ctx, r.Build.ID, false); err != nil {
			t.Fatal(err)
		}
		d, _, logs := h.state(t, r)
		if d.Status != string(deployment.StatusDeploying) {
			t.Fatalf("build failed: %v\n%s", d.FailureReason, strings.Join(logs, "\n"))
		}
		return logs
	}
	run(a)
	a.svc.Fetcher = reader("a")
	if logs := strings.Join(run(a), "\n"); !strings.Contains(logs, secret) {
		t.Fatalf("the project's own next build does not see its cache mount:\n%s", logs)
	}
	b := newHarness(t, reader("b"))
	logs := strings.Join(run(b), "\n")
	if strings.Contains(logs, secret) || !strings.Contains(logs, "no-42-cache") {
		t.Fatalf("another project's build saw the first one's cache mount:\n%s", logs)
	}
}

// GitHub's tarball download redirects to a URL with a token of its own;
// when that download fails, neither the error, nor the build's log, nor the
// deployment's failure reason may carry it.
func TestFailedGitHubDownloadNamesNoToken(t *testing.T) {
	h := newHarness(t, nil)
	gh, instID, sha, seen := brokenCodeload(t)
	ctx := context.Background()
	var org uuid.UUID
	if err := h.pool.QueryRow(ctx, `SELECT organisation_id FROM projects WHERE id = $1`, h.project).Scan(&org); err != nil {
		t.Fatal(err)
	}
	inst := id.New()
	if _, err := h.pool.Exec(ctx, `INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type) VALUES ($1, $2, $3, 'alice', 'User')`, inst, instID, org); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, `UPDATE projects SET github_installation_id = $2, github_repository_id = 1, github_repository_full_name = 'alice/app' WHERE id = $1`, h.project, inst); err != nil {
		t.Fatal(err)
	}
	h.svc.Fetcher = builder.SourceFetcher{Queries: db.New(h.pool), GitHub: gh}
	r, err := build.Request(ctx, h.pool, h.q, h.project, build.Source{CommitSHA: sha}, nil)
	if err != nil {
		t.Fatal(err)
	}
	retryErr := h.svc.Run(ctx, r.Build.ID, false) // a cut download is worth a retry
	if retryErr == nil {
		t.Fatal("a failed download was not reported for a retry")
	}
	if err := h.svc.Run(ctx, r.Build.ID, true); err != nil {
		t.Fatal(err)
	}
	d, _, logs := h.state(t, r)
	token := seen()
	if token == "" {
		t.Fatal("the download never reached codeload")
	}
	if d.FailureReason == nil {
		t.Fatalf("deployment %s without a reason", d.Status)
	}
	for what, text := range map[string]string{"retry error": retryErr.Error(), "failure reason": *d.FailureReason, "build log": strings.Join(logs, "\n")} {
		if strings.Contains(text, token) {
			t.Errorf("%s carries the download token:\n%s", what, text)
		}
		if !strings.Contains(text, "legacy.tar.gz") {
			t.Errorf("%s no longer says what failed:\n%s", what, text)
		}
	}
}

// brokenCodeload is a GitHub (the emulator) with one repository, alice/app,
// whose download host takes the request and then cuts the connection, as a
// reset mid-download would. It returns a client for the App, the
// installation's id, the commit, and the download token codeload was sent.
func brokenCodeload(t *testing.T) (*github.Client, int64, string, func() string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	emu := githubemu.New(githubemu.App{ID: 7, Slug: "zeitwork", PublicKey: &key.PublicKey})
	srv, err := emu.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	var mu sync.Mutex
	var token string
	codeload := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		token = r.URL.Query().Get("token")
		mu.Unlock()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(codeload.Close)
	emu.SetURLs(srv.APIURL, codeload.URL)

	repo := t.TempDir()
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"-c", "user.name=A", "-c", "user.email=a@example.com", "commit", "-q", "--allow-empty", "-m", "first"},
	} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	emu.AddUser(githubemu.User{Login: "alice"})
	inst, err := emu.AddInstallation(githubemu.Installation{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.AddRepository(inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Dir: repo}); err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	gh, err := github.New(github.Config{BaseURL: srv.APIURL, AppID: 7, PrivateKey: pemKey})
	if err != nil {
		t.Fatal(err)
	}
	return gh, inst.ID, strings.TrimSpace(string(out)), func() string { mu.Lock(); defer mu.Unlock(); return token }
}

// A "# syntax=" line would hand the build to a frontend image of the
// Dockerfile's choosing, which could name another project's cache mounts:
// it is ignored, and BuildKit's built-in frontend builds the file. (Before,
// this build failed pulling the named frontend.)
func TestSyntaxLineCannotSwapTheFrontend(t *testing.T) {
	bkit, reg := stack(t)
	dir := t.TempDir()
	df := "# syntax=frontend.invalid/evil:1\nFROM scratch\nCOPY Dockerfile /Dockerfile\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if _, err := bkit.Build(context.Background(), builder.Request{
		ContextDir: dir, Dockerfile: []byte(df), Repository: "zeitwork-test/syntax", Tag: id.New().String(), Registry: reg,
	}, &out); err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "frontend.invalid") {
		t.Fatalf("the named frontend was looked up:\n%s", out.String())
	}
}
