package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/githubemu"
	"github.com/zeitwork/zeitwork/internal/testenv"
	"github.com/zeitwork/zeitwork/internal/upload"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestDevRolesParseLikeProduction: dev's roles take the same defaults as
// production's, except what dev decides (loopback listeners, no TLS, dev
// names), and the caller's variables win over dev's defaults.
func TestDevRolesParseLikeProduction(t *testing.T) {
	vars := devVars(map[string]string{"DEV_PORT_BASE": "30100", "DEV_NODES": "0", "QUEUE_WORKERS": "3"})
	vars["CLUSTER_TOKEN"], vars["NODE_PROXY_TOKEN"], vars["MANAGEMENT_TOKEN"] = "t", "p", "m"
	cfg, err := config.ParseFrom[config.Dev](vars)
	if err != nil {
		t.Fatal(err)
	}
	roles, err := devRoles(cfg, vars, nil)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := config.ParseFrom[config.Operator](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "MANAGEMENT_TOKEN": "m", "QUEUE_WORKERS": "3"})
	if err != nil {
		t.Fatal(err)
	}
	o, e, b := roles.operator, roles.edge, roles.builder
	if o.Queue != prod.Queue || o.RetireGrace != prod.RetireGrace || o.CustomDomains != prod.CustomDomains {
		t.Errorf("dev operator %+v, production %+v", o, prod)
	}
	if o.Addr != "127.0.0.1:30081" || e.HTTPAddr != "127.0.0.1:30082" || e.MetricsAddr != "127.0.0.1:30083" || e.TLS() {
		t.Errorf("operator on %s, edge on %s (metrics %s, TLS %v)", o.Addr, e.HTTPAddr, e.MetricsAddr, e.TLS())
	}
	if a := roles.api; a.Addr != "127.0.0.1:30080" || !a.Dev || a.GitHub.ClientID != "" {
		t.Errorf("api on %s, dev %v, GitHub %+v", a.Addr, a.Dev, a.GitHub)
	}
	if e.Platform.AppsDomain != "zeitwork.localhost" || o.Platform.EdgeHost != "edge.zeitwork.localhost" ||
		roles.api.Platform.AppsURL != "http://zeitwork.localhost:30082" {
		t.Errorf("dev platform %+v", o.Platform)
	}
	if !b.Registry.Insecure || b.Registry.Addr != cfg.Registry.Addr || b.Log.Format != zlog.FormatText {
		t.Errorf("dev builder registry %+v, log %+v", b.Registry, b.Log)
	}

	vars = devVars(map[string]string{"EDGE_APPS_DOMAIN": "apps.test", "LOG_FORMAT": "json"})
	vars["CLUSTER_TOKEN"], vars["NODE_PROXY_TOKEN"], vars["MANAGEMENT_TOKEN"] = "t", "p", "m"
	roles, err = devRoles(cfg, vars, nil)
	if err != nil {
		t.Fatal(err)
	}
	if roles.operator.Platform.EdgeHost != "edge.apps.test" || roles.edge.Log.Format != zlog.FormatJSON ||
		roles.api.Platform.AppsURL != "http://apps.test:30082" {
		t.Errorf("caller's variables: edge host %s, log %+v, apps URL %s", roles.operator.Platform.EdgeHost, roles.edge.Log, roles.api.Platform.AppsURL)
	}

	// Each role connects as its own database user.
	urls := map[dbrole.Role]string{}
	for _, r := range dbrole.All {
		urls[r] = "postgres://zw-dev_" + string(r) + ":pw@127.0.0.1:1/zeitwork"
	}
	if roles, err = devRoles(cfg, vars, urls); err != nil {
		t.Fatal(err)
	}
	for r, got := range map[dbrole.Role]config.PostgresURL{
		dbrole.API: roles.api.Database.URL, dbrole.Operator: roles.operator.Database.URL,
		dbrole.Builder: roles.builder.Database.URL, dbrole.Edge: roles.edge.Database.URL,
	} {
		if got.Reveal() != urls[r] {
			t.Errorf("%s connects as %s, want %s", r, got, urls[r])
		}
	}
	if roles.apiVars["DATABASE_URL"] != urls[dbrole.API] {
		t.Errorf("zeitwork api parses DATABASE_URL %s", roles.apiVars["DATABASE_URL"])
	}
}

// TestDevSignsInTheCLI: dev leaves the CLI signed in as the dev user, with
// a token in a credentials file of mode 0600 when there was none; keeps a
// working dev login on a restart; replaces a dead one; and never touches a
// developer's login to another API.
func TestDevSignsInTheCLI(t *testing.T) {
	e := newUserEnv(t)
	ctx := context.Background()
	store := account.Store{DB: e.pool}
	u := &user{env: Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config}}}
	const devAPI = "http://127.0.0.1:30080"
	path := filepath.Join(e.config, "zeitwork", "credentials.json")
	tokens := func() (n int) {
		t.Helper()
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Absent: written, 0600, a token of the admitted dev user.
	first, err := signInDev(ctx, store, u, devAPI)
	if err != nil {
		t.Fatal(err)
	}
	if first.path != path || first.revoke != nil || fileMode(t, path) != 0o600 {
		t.Fatalf("login %+v, file mode %v", first, fileMode(t, path))
	}
	saved, err := u.loadCredentials()
	if err != nil || saved.APIURL != devAPI || saved.Token != first.token || saved.TokenID == "" {
		t.Fatalf("saved %+v (%v)", saved, err)
	}
	p, err := store.Bearer(ctx, first.token)
	if err != nil {
		t.Fatal(err)
	}
	who, err := store.User(ctx, p.UserID)
	if err != nil || who.Username != githubemu.DevLogin || !who.Admitted {
		t.Fatalf("the token is %+v's (%v), want the admitted dev user", who, err)
	}

	// A restart keeps the login, however the loopback host is spelled.
	again, err := signInDev(ctx, store, u, "http://localhost:30080")
	if err != nil || again.token != first.token || tokens() != 1 {
		t.Fatalf("restart: %+v (%v), %d tokens", again, err, tokens())
	}

	// A revoked token is replaced, in the same file.
	if err := store.RevokeToken(ctx, who.ID, p.TokenID); err != nil {
		t.Fatal(err)
	}
	fresh, err := signInDev(ctx, store, u, devAPI)
	if err != nil || fresh.token == first.token || fresh.path != path {
		t.Fatalf("after revoking: %+v (%v)", fresh, err)
	}
	if saved, _ := u.loadCredentials(); saved.Token != fresh.token {
		t.Fatalf("the dead token stayed in the file: %+v", saved)
	}

	// A login to another API is left byte for byte; dev's token for this
	// start is revoked when dev is done with it.
	theirs := []byte(`{"api_url": "https://api.zeitwork.com", "token": "zw_theirs"}` + "\n")
	if err := os.WriteFile(path, theirs, 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := signInDev(ctx, store, u, devAPI)
	if err != nil || other.path != "" || other.other != "https://api.zeitwork.com" || other.revoke == nil {
		t.Fatalf("with another API's login: %+v (%v)", other, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, theirs) {
		t.Fatalf("the other login was rewritten:\n%s", b)
	}
	other.revoke(ctx)
	if _, err := store.Bearer(ctx, other.token); err == nil {
		t.Fatal("the token for one start outlived it")
	}
	// So is one to another port of this machine: another dev platform.
	if err := os.WriteFile(path, []byte(`{"api_url": "http://127.0.0.1:1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := signInDev(ctx, store, u, devAPI); err != nil || l.path != "" {
		t.Fatalf("with a login to another port: %+v (%v)", l, err)
	}
}

// TestDevDeploysHelloOnce: the first start creates the project hello with
// small resources and deploys examples/hello as `zeitwork deploy` would; a
// start while it builds waits for that deployment, and one after it is
// active reuses it: never a second deployment.
func TestDevDeploysHelloOnce(t *testing.T) {
	e := newUserEnv(t)
	mc, s3 := testenv.Bucket(t, "clihello")
	e.api.Uploads = &upload.Store{S3: mc, Bucket: s3.Bucket, MaxBytes: 1 << 20, Expiry: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := &user{env: Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config}, Stdout: io.Discard, Stderr: io.Discard}}
	login, err := signInDev(ctx, account.Store{DB: e.pool}, u, e.url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewAPI(e.url, login.token, u.http())
	if err != nil {
		t.Fatal(err)
	}
	deployments := func() (n int) {
		t.Helper()
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM deployments`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The first start deploys and waits; a second one meanwhile waits on
	// the same deployment rather than making another.
	type result struct {
		url      string
		deployed bool
		err      error
	}
	firstDone := make(chan result, 1)
	go func() {
		url, deployed, err := ensureHello(ctx, c, u, t.TempDir())
		firstDone <- result{url, deployed, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); deployments() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first start made no deployment")
		}
	}
	waiting, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if _, deployed, err := ensureHello(waiting, c, u, t.TempDir()); deployed || !errors.Is(err, context.DeadlineExceeded) || deployments() != 1 {
		t.Fatalf("a start while it builds: deployed %v (%v), %d deployments", deployed, err, deployments())
	}
	var p client.Project
	if err := e.pool.QueryRow(ctx, `SELECT id, cpu_millis, memory_mb, health_check_path FROM projects WHERE slug = 'hello'`).
		Scan(&p.Id, &p.CpuMillis, &p.MemoryMb, &p.HealthCheckPath); err != nil {
		t.Fatal(err)
	}
	if p.CpuMillis != 100 || p.MemoryMb != 64 || p.HealthCheckPath != "/healthz" {
		t.Fatalf("project hello: %+v", p)
	}
	ds, err := listDeployments(ctx, c, p.Id)
	if err != nil || len(ds) != 1 || ds[0].ArchiveKey == nil {
		t.Fatalf("deployments %+v (%v), want one from an archive", ds, err)
	}
	obj, err := mc.GetObject(ctx, s3.Bucket, *ds[0].ArchiveKey, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	gz, err := gzip.NewReader(obj)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for tr := tar.NewReader(gz); ; {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	slices.Sort(names)
	if want := []string{"README.md", "package.json", "server.js"}; !slices.Equal(names, want) {
		t.Fatalf("uploaded %v, want %v", names, want)
	}

	// The stand-in platform makes it live; the next starts reuse it.
	e.exec(`UPDATE deployments SET status = 'active', active_at = now()`)
	e.exec(`UPDATE projects SET active_deployment_id = (SELECT id FROM deployments) WHERE id = $1`, p.Id)
	select {
	case r := <-firstDone:
		if r.err != nil || !r.deployed || r.url != "https://hello."+testAppsDomain {
			t.Fatalf("first start: %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first start did not see its deployment go live")
	}
	for range 2 {
		url, deployed, err := ensureHello(ctx, c, u, t.TempDir())
		if err != nil || deployed || url != "https://hello."+testAppsDomain || deployments() != 1 {
			t.Fatalf("a start with hello active: %q, deployed %v (%v), %d deployments", url, deployed, err, deployments())
		}
	}
}

// TestDevProgressIsPlainOffATerminal: written to a pipe or a file, each
// stage is one line when it ends, with no spinner frames, escapes or
// colours to garble a log.
func TestDevProgressIsPlainOffATerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, map[string]string{"TERM": "xterm-256color"})
	p.start("database", "migrating")
	p.done("database", "migrated")
	p.start("hello", "deploying")
	p.fail("hello", errors.New("build failed"))
	want := "  ✓ database      migrated\n  ✗ hello         build failed\n"
	if out.String() != want || p.title("Zeitwork dev is running") != "Zeitwork dev is running" {
		t.Fatalf("progress wrote %q, want %q", out.String(), want)
	}
}

// Run from a checkout whose dashboard is built, dev's api serves it.
func TestDevServesTheBuiltDashboard(t *testing.T) {
	vars := devVars(map[string]string{"DEV_PORT_BASE": "30100", "DEV_NODES": "0"})
	vars["CLUSTER_TOKEN"], vars["NODE_PROXY_TOKEN"], vars["MANAGEMENT_TOKEN"] = "t", "p", "m"
	cfg, err := config.ParseFrom[config.Dev](vars)
	if err != nil {
		t.Fatal(err)
	}
	checkout := t.TempDir()
	t.Chdir(checkout)
	if roles, err := devRoles(cfg, vars, nil); err != nil || roles.api.WebDir != "" {
		t.Fatalf("without a bundle: WebDir %q, %v", roles.api.WebDir, err)
	}
	bundle := filepath.Join(checkout, devWebBundle)
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "index.html"), []byte("<!doctype html>"), 0o644); err != nil {
		t.Fatal(err)
	}
	if roles, err := devRoles(cfg, vars, nil); err != nil || roles.api.WebDir != bundle {
		t.Fatalf("with a bundle: WebDir %q, want %q (%v)", roles.api.WebDir, bundle, err)
	}
	// One the caller names wins.
	vars["API_WEB_DIR"] = "/elsewhere"
	if roles, _ := devRoles(cfg, vars, nil); roles.api.WebDir != "/elsewhere" {
		t.Fatalf("API_WEB_DIR given: WebDir %q", roles.api.WebDir)
	}
}

// TestDevSignsInTheSudoUser: dev run as root through sudo writes the CLI
// login into the config directory of the user who ran sudo, owned by
// them (the directories it had to make too), file 0600 in a 0700
// directory, so that their `zeitwork whoami` reads it; a restart finds it.
func TestDevSignsInTheSudoUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the login away") // the e2e tests run as root
	}
	e := newUserEnv(t)
	ctx := context.Background()
	store := account.Store{DB: e.pool}
	home := t.TempDir() // the sudo user's home, with no ~/.config yet
	const uid, gid = 65534, 65534
	// The process's own config directory (root's) is not where the login goes.
	u := &user{env: Env{Environ: []string{"XDG_CONFIG_HOME=" + e.config}},
		owner: &devenv.LoginOwner{Name: "someone", UID: uid, GID: gid, ConfigHome: filepath.Join(home, ".config")}}
	l, err := signInDev(ctx, store, u, "http://127.0.0.1:30080")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, ".config", "zeitwork", "credentials.json")
	if l.path != path {
		t.Fatalf("login written to %q, want %q", l.path, path)
	}
	if _, err := os.Stat(filepath.Join(e.config, "zeitwork")); err == nil {
		t.Fatal("the login also went to root's config directory")
	}
	for p, mode := range map[string]os.FileMode{
		filepath.Join(home, ".config"): 0o700, filepath.Dir(path): 0o700, path: 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != mode {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d %v", p, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid, mode)
		}
	}
	// The sudo user's CLI, with their own environment, is signed in.
	theirs := &user{env: Env{Environ: []string{"HOME=" + home}}}
	saved, err := theirs.loadCredentials()
	if err != nil || saved.Token != l.token {
		t.Fatalf("the user's CLI reads %+v (%v)", saved, err)
	}
	again, err := signInDev(ctx, store, u, "http://127.0.0.1:30080")
	if err != nil || again.token != l.token {
		t.Fatalf("restart: %+v (%v)", again, err)
	}
}

// TestDevProgressSpinsOnATerminal: on a terminal a running stage is a
// spinner with the time it has taken, redrawn in place, and each stage ends
// as one ✓/✗ line with no spinner drawn after it.
func TestDevProgressSpinsOnATerminal(t *testing.T) {
	master, tty := openPTY(t)
	var screen testenv.Buffer
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(&screen, master)
		close(copied)
	}()
	p := newProgress(tty, map[string]string{"TERM": "xterm-256color", "NO_COLOR": "1"})
	if !p.tty {
		t.Fatal("a pseudo-terminal was not taken for a terminal")
	}
	p.start("database", "migrating")
	// Wait until the spinner has turned at least once on its own.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(screen.String(), "migrating") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the spinner never turned: %q", screen.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.done("database", "migrated")
	p.start("hello", "deploying")
	p.fail("hello", errors.New("build failed"))
	tty.Close()
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		master.Close()
		<-copied
	}
	drawn := screen.String()
	if !strings.Contains(drawn, "\r") || !strings.Contains(drawn, "database      migrating") {
		t.Errorf("no spinner drawn in place:\n%q", drawn)
	}
	i, j := strings.Index(drawn, "✓ database      migrated"), strings.Index(drawn, "✗ hello         build failed")
	if i < 0 || j < i {
		t.Fatalf("stages did not end as ✓/✗ lines in order:\n%q", drawn)
	}
	if strings.Contains(drawn[i:j], "migrating") || strings.Contains(drawn[j:], "deploying") {
		t.Errorf("a spinner was drawn after its stage ended:\n%q", drawn)
	}
}
