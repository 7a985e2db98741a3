package githubemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The account `zeitwork dev` signs in as, and the App's one installation
// on it. They are constants, not state, so that a restarted emulator is
// the same GitHub to the database that outlived it.
const (
	DevLogin          = "dev"
	DevUserID         = int64(1)
	DevInstallationID = int64(1)
)

// DevRepositoryID is the id the dev emulator gives the repository named
// name: derived from the name, so that a project connected to it stays
// connected across restarts.
func DevRepositoryID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(DevLogin + "/" + name))
	return int64(h.Sum64()>>34) + 1 // 30 bits: far from the ids New assigns
}

// DevConfig is how `zeitwork dev` runs the emulator.
type DevConfig struct {
	App App
	// Dir keeps the repositories (Dir/repos/<name>.git, any local git
	// repository) and which heads were delivered (Dir/pushed.json).
	Dir string
	// APIAddr serves the API and web flow, CodeloadAddr the tarballs
	// (host:port).
	APIAddr, CodeloadAddr string
	// PublicHost names APIAddr in links and redirects: a browser on this
	// machine follows the OAuth redirects there ("localhost").
	PublicHost string
	// WebhookURL receives the App's deliveries.
	WebhookURL string
	// PollInterval is how often the repositories are looked at; 1s when zero.
	PollInterval time.Duration
	Log          *slog.Logger
}

// Dev is the emulator as a long-running server over local repositories:
// the dev user is always signed in and approves every authorization, the
// App is installed on their account, every repository under Dir/repos is
// theirs and the installation's, and a branch that moves there (a git
// push into it) is delivered to WebhookURL as GitHub's push event.
type Dev struct {
	*Emulator
	// URL is the API's and web flow's base; CodeloadURL the download host's.
	URL, CodeloadURL string

	cfg     DevConfig
	api, cl net.Listener
	known   map[string]bool              // repository names added to the emulator
	pushed  map[string]map[string]string // full name → branch → head delivered
}

// ListenDev binds cfg's addresses; Run serves them.
func ListenDev(cfg DevConfig) (*Dev, error) {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "repos"), 0o755); err != nil {
		return nil, fmt.Errorf("githubemu: %w", err)
	}
	d := &Dev{Emulator: New(cfg.App), cfg: cfg, known: map[string]bool{}, pushed: map[string]map[string]string{}}
	var err error
	if d.api, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return nil, fmt.Errorf("githubemu: %w", err)
	}
	if d.cl, err = net.Listen("tcp", cfg.CodeloadAddr); err != nil {
		d.api.Close()
		return nil, fmt.Errorf("githubemu: %w", err)
	}
	host := cfg.PublicHost
	if host == "" {
		host, _, _ = net.SplitHostPort(d.api.Addr().String())
	}
	d.URL = "http://" + net.JoinHostPort(host, portOf(d.api.Addr()))
	d.CodeloadURL = "http://" + d.cl.Addr().String()
	d.SetURLs(d.URL, d.CodeloadURL)

	d.AddUser(User{ID: DevUserID, Login: DevLogin, Name: "Dev",
		Emails: []Email{{Email: DevLogin + "@zeitwork.localhost", Primary: true, Verified: true, Visibility: "private"}}})
	d.ApproveAs(DevLogin)
	if _, err := d.AddInstallation(Installation{ID: DevInstallationID, Account: DevLogin}); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(d.pushedPath()); err == nil {
		if err := json.Unmarshal(b, &d.pushed); err != nil {
			return nil, fmt.Errorf("githubemu: %s: %w (delete it to deliver every branch again)", d.pushedPath(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("githubemu: %w", err)
	}
	return d, nil
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// ReposDir is where repositories go: each directory in it that is a git
// repository is one, named after the directory (less ".git").
func (d *Dev) ReposDir() string { return filepath.Join(d.cfg.Dir, "repos") }

func (d *Dev) pushedPath() string { return filepath.Join(d.cfg.Dir, "pushed.json") }

// Run serves and delivers pushes until ctx ends.
func (d *Dev) Run(ctx context.Context) error {
	api := &http.Server{Handler: d.Emulator, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	cl := &http.Server{Handler: d.Codeload(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errs := make(chan error, 2)
	go func() { errs <- api.Serve(d.api) }()
	go func() { errs <- cl.Serve(d.cl) }()
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	for {
		d.scan(ctx)
		select {
		case <-ctx.Done():
			return errors.Join(api.Close(), cl.Close())
		case err := <-errs:
			api.Close()
			cl.Close()
			return fmt.Errorf("githubemu: %w", err)
		case <-tick.C:
		}
	}
}

// repoName is what GitHub accepts as a repository name.
var repoName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// scan brings the emulator's repositories in line with the directory and
// delivers every branch that moved since its last delivery. A delivery
// the API did not answer is tried again on the next scan; one it answered,
// whatever the status, is done, as on GitHub.
func (d *Dev) scan(ctx context.Context) {
	entries, err := os.ReadDir(d.ReposDir())
	if err != nil {
		d.cfg.Log.WarnContext(ctx, "reading the repositories failed", "dir", d.ReposDir(), "err", err)
		return
	}
	present := map[string]bool{}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".git")
		if !e.IsDir() || !repoName.MatchString(name) || present[name] {
			continue
		}
		dir := filepath.Join(d.ReposDir(), e.Name())
		if !isRepository(dir) {
			continue
		}
		heads, err := branches(ctx, dir)
		if err != nil {
			continue // not a git repository (yet)
		}
		present[name] = true
		if !d.known[name] {
			def, err := git(ctx, dir, "symbolic-ref", "--short", "HEAD")
			if err != nil {
				def = "main"
			}
			if _, err := d.AddRepository(DevInstallationID, Repository{ID: DevRepositoryID(name), Owner: DevLogin, Name: name,
				Private: true, DefaultBranch: strings.TrimSpace(def), Dir: dir}); err != nil {
				d.cfg.Log.ErrorContext(ctx, "adding a repository failed", "repository", name, "err", err)
				continue
			}
			d.known[name] = true
			d.cfg.Log.InfoContext(ctx, "repository", "full_name", DevLogin+"/"+name, "id", DevRepositoryID(name), "dir", dir)
		}
		if !d.deliverMoves(ctx, DevLogin+"/"+name, heads) {
			return // the API is not answering: try again on the next scan
		}
	}
	for name := range d.known {
		if !present[name] {
			d.RemoveRepository(DevLogin + "/" + name)
			delete(d.known, name)
		}
	}
}

// deliverMoves delivers a push for every branch of fullName whose head is
// not the one last delivered, in name order. It returns false when a
// delivery got no answer.
func (d *Dev) deliverMoves(ctx context.Context, fullName string, heads map[string]string) bool {
	pushed := d.pushed[fullName]
	if pushed == nil {
		pushed = map[string]string{}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for b := range heads {
			if !yield(b) {
				return
			}
		}
		for b := range pushed {
			if _, ok := heads[b]; !ok && !yield(b) {
				return
			}
		}
	})
	for _, branch := range names {
		head, exists := heads[branch]
		if pushed[branch] == head {
			continue
		}
		var ev Event
		var err error
		if exists {
			ev, err = d.Push(ctx, fullName, branch, pushed[branch])
		} else {
			ev, err = d.BranchDeleted(fullName, branch, pushed[branch])
		}
		if err != nil {
			d.cfg.Log.WarnContext(ctx, "reading a push failed", "repository", fullName, "branch", branch, "err", err)
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		del, status, err := d.Deliver(dctx, d.cfg.WebhookURL, ev)
		cancel()
		if err != nil {
			d.cfg.Log.DebugContext(ctx, "the webhook did not answer", "url", d.cfg.WebhookURL, "err", err)
			return false
		}
		after := ev.Payload.(pushPayload).After
		log := d.cfg.Log.With("repository", fullName, "branch", branch, "commit", after, "delivery", del.ID, "status", status)
		if status/100 == 2 {
			log.InfoContext(ctx, "push delivered")
		} else {
			log.WarnContext(ctx, "push delivered, refused by the webhook")
		}
		if exists {
			pushed[branch] = after
		} else {
			delete(pushed, branch)
		}
		d.pushed[fullName] = pushed
		if err := d.savePushed(); err != nil {
			d.cfg.Log.WarnContext(ctx, "saving the delivered heads failed", "err", err)
		}
	}
	return true
}

func (d *Dev) savePushed() error {
	b, err := json.MarshalIndent(d.pushed, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.pushedPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.pushedPath())
}

// isRepository: dir is a bare repository or has a .git. Asked first
// because git itself would look further up for one.
func isRepository(dir string) bool {
	for _, marker := range []string{"HEAD", ".git"} {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return true
		}
	}
	return false
}

// branches is branch → head commit of the local repository at dir.
func branches(ctx context.Context, dir string) (map[string]string, error) {
	out, err := git(ctx, dir, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads")
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for line := range strings.Lines(out) {
		if b, sha, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			heads[b] = sha
		}
	}
	return heads, nil
}
