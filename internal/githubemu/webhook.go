package githubemu

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event is a webhook event ready to deliver: its name (X-GitHub-Event) and
// payload. The methods below build them from the emulator's state, shaped
// like GitHub's.
type Event struct {
	Name    string
	Payload any
}

// Delivery is one webhook request as GitHub sends it. Send it again to
// replay it; change Body to tamper with it (the signature stays).
type Delivery struct {
	ID        string // X-GitHub-Delivery
	Event     string // X-GitHub-Event
	Body      []byte
	Signature string // X-Hub-Signature-256
	// SignatureSHA1 is the legacy X-Hub-Signature GitHub still sends.
	SignatureSHA1 string
}

// hookID is the App's one webhook; GitHub Apps have exactly one.
const hookID = 4242

// NewDelivery serializes and signs ev under a fresh delivery id.
func (e *Emulator) NewDelivery(ev Event) (Delivery, error) {
	body, err := json.Marshal(ev.Payload)
	if err != nil {
		return Delivery{}, fmt.Errorf("githubemu: encode %s payload: %w", ev.Name, err)
	}
	sha1MAC := hmac.New(sha1.New, []byte(e.app.WebhookSecret))
	sha1MAC.Write(body)
	return Delivery{ID: uuid.NewString(), Event: ev.Name, Body: body, Signature: Sign(e.app.WebhookSecret, body),
		SignatureSHA1: "sha1=" + hex.EncodeToString(sha1MAC.Sum(nil))}, nil
}

// Sign is the X-Hub-Signature-256 value for body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send POSTs d to url with GitHub's headers and returns the status code
// the receiver answered.
func (e *Emulator) Send(ctx context.Context, url string, d Delivery) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		return 0, fmt.Errorf("githubemu: deliver %s: %w", d.Event, err)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/7c2a9e1")
	h.Set("X-GitHub-Event", d.Event)
	h.Set("X-GitHub-Delivery", d.ID)
	h.Set("X-GitHub-Hook-ID", fmt.Sprint(hookID))
	h.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	h.Set("X-GitHub-Hook-Installation-Target-ID", fmt.Sprint(e.app.ID))
	// An empty signature is left out, to test receivers without one.
	if d.SignatureSHA1 != "" {
		h.Set("X-Hub-Signature", d.SignatureSHA1)
	}
	if d.Signature != "" {
		h.Set("X-Hub-Signature-256", d.Signature)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("githubemu: deliver %s: %w", d.Event, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Deliver signs ev and sends it to url, as GitHub delivers to the App's
// webhook URL.
func (e *Emulator) Deliver(ctx context.Context, url string, ev Event) (Delivery, int, error) {
	d, err := e.NewDelivery(ev)
	if err != nil {
		return Delivery{}, 0, err
	}
	status, err := e.Send(ctx, url, d)
	return d, status, err
}

type hookJSON struct {
	Type          string         `json:"type"`
	ID            int64          `json:"id"`
	Name          string         `json:"name"`
	Active        bool           `json:"active"`
	AppID         int64          `json:"app_id"`
	Events        []string       `json:"events"`
	Config        map[string]any `json:"config"`
	UpdatedAt     time.Time      `json:"updated_at"`
	CreatedAt     time.Time      `json:"created_at"`
	DeliveriesURL string         `json:"deliveries_url"`
}

type pingPayload struct {
	Zen    string     `json:"zen"`
	HookID int64      `json:"hook_id"`
	Hook   hookJSON   `json:"hook"`
	Sender simpleUser `json:"sender"`
}

// Ping is the event GitHub sends when the App's webhook is set up, to
// the webhook at url.
func (e *Emulator) Ping(url string) Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	owner := &User{Login: e.app.Slug, ID: e.app.ID}
	return Event{Name: "ping", Payload: pingPayload{
		Zen: "Keep it logically awesome.", HookID: hookID,
		Hook: hookJSON{Type: "App", ID: hookID, Name: "web", Active: true, AppID: e.app.ID,
			Events:    []string{"push", "installation", "installation_repositories"},
			Config:    map[string]any{"content_type": "json", "insecure_ssl": "0", "url": url},
			UpdatedAt: epoch, CreatedAt: epoch,
			DeliveriesURL: fmt.Sprintf("%s/app/hook/deliveries", e.apiBase())},
		Sender: e.simpleUser(owner),
	}}
}

type installationPayload struct {
	Action       string           `json:"action"`
	Installation installationJSON `json:"installation"`
	Repositories []shortRepoJSON  `json:"repositories"`
	Requester    *simpleUser      `json:"requester"`
	Sender       simpleUser       `json:"sender"`
}

// Installation is the installation event: action is "created",
// "deleted", "suspend", "unsuspend" or "new_permissions_accepted".
func (e *Emulator) Installation(action string, installationID int64) (Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.installations[installationID]
	if !ok {
		return Event{}, fmt.Errorf("githubemu: unknown installation %d", installationID)
	}
	repos := []shortRepoJSON{}
	for _, r := range e.reposOf(in.ID) {
		repos = append(repos, shortRepo(r))
	}
	return Event{Name: "installation", Payload: installationPayload{
		Action: action, Installation: e.installationJSON(in), Repositories: repos,
		Sender: e.simpleUser(e.owner(in.Account)),
	}}, nil
}

type installationReposPayload struct {
	Action              string           `json:"action"`
	Installation        installationJSON `json:"installation"`
	RepositorySelection string           `json:"repository_selection"`
	RepositoriesAdded   []shortRepoJSON  `json:"repositories_added"`
	RepositoriesRemoved []shortRepoJSON  `json:"repositories_removed"`
	Requester           *simpleUser      `json:"requester"`
	Sender              simpleUser       `json:"sender"`
}

// InstallationRepositories is the installation_repositories event for
// repositories added to or removed from an installation ("added" or
// "removed"). Added repositories must have been given to the installation
// with AddRepository; removed ones may already be gone.
func (e *Emulator) InstallationRepositories(action string, installationID int64, added, removed []Repository) (Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.installations[installationID]
	if !ok {
		return Event{}, fmt.Errorf("githubemu: unknown installation %d", installationID)
	}
	j := e.installationJSON(in)
	j.AppSlug = "" // absent from this event's installation object on GitHub
	p := installationReposPayload{
		Action: action, Installation: j, RepositorySelection: "selected",
		RepositoriesAdded: []shortRepoJSON{}, RepositoriesRemoved: []shortRepoJSON{},
		Sender: e.simpleUser(e.owner(in.Account)),
	}
	for _, r := range added {
		p.RepositoriesAdded = append(p.RepositoriesAdded, shortRepo(&r))
	}
	for _, r := range removed {
		p.RepositoriesRemoved = append(p.RepositoriesRemoved, shortRepo(&r))
	}
	return Event{Name: "installation_repositories", Payload: p}, nil
}

type commitUser struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username,omitempty"`
}

type commitJSON struct {
	ID        string     `json:"id"`
	TreeID    string     `json:"tree_id"`
	Distinct  bool       `json:"distinct"`
	Message   string     `json:"message"`
	Timestamp string     `json:"timestamp"`
	URL       string     `json:"url"`
	Author    commitUser `json:"author"`
	Committer commitUser `json:"committer"`
	Added     []string   `json:"added"`
	Removed   []string   `json:"removed"`
	Modified  []string   `json:"modified"`
}

type pushPayload struct {
	Ref          string         `json:"ref"`
	Before       string         `json:"before"`
	After        string         `json:"after"`
	Created      bool           `json:"created"`
	Deleted      bool           `json:"deleted"`
	Forced       bool           `json:"forced"`
	BaseRef      *string        `json:"base_ref"`
	Compare      string         `json:"compare"`
	Commits      []commitJSON   `json:"commits"`
	HeadCommit   *commitJSON    `json:"head_commit"`
	Repository   repoJSON       `json:"repository"`
	Pusher       commitUser     `json:"pusher"`
	Sender       simpleUser     `json:"sender"`
	Installation map[string]any `json:"installation"`
}

// zeroSHA is what GitHub puts for the side of a push where the ref did
// not exist.
const zeroSHA = "0000000000000000000000000000000000000000"

// maxPushCommits: GitHub lists at most 20 commits in a push payload.
const maxPushCommits = 20

// Push is the push event for branch of the repository fullName moving
// from before to its current head in the local git repository. An empty
// before (or zeroSHA) means the branch was just created.
func (e *Emulator) Push(ctx context.Context, fullName, branch, before string) (Event, error) {
	e.mu.Lock()
	repo, inst, ok := e.repo(fullName)
	e.mu.Unlock()
	if !ok {
		return Event{}, fmt.Errorf("githubemu: push: unknown repository %s", fullName)
	}
	branch = strings.TrimPrefix(branch, "refs/heads/")
	after, err := resolve(ctx, repo.Dir, "refs/heads/"+branch)
	if err != nil {
		return Event{}, fmt.Errorf("githubemu: push %s: %w", fullName, err)
	}
	if before == "" {
		before = zeroSHA
	}
	created := before == zeroSHA
	shas := []string{after}
	forced := false
	if !created {
		if _, err := git(ctx, repo.Dir, "merge-base", "--is-ancestor", before, after); err != nil {
			forced = true
		} else {
			out, err := git(ctx, repo.Dir, "rev-list", "--reverse", before+".."+after)
			if err != nil {
				return Event{}, fmt.Errorf("githubemu: push %s: %w", fullName, err)
			}
			shas = strings.Fields(out)
		}
	}
	shas = shas[max(len(shas)-maxPushCommits, 0):]
	commits := make([]commitJSON, 0, len(shas))
	for _, sha := range shas {
		c, err := e.commit(ctx, repo, sha)
		if err != nil {
			return Event{}, fmt.Errorf("githubemu: push %s: %w", fullName, err)
		}
		commits = append(commits, c)
	}
	var head *commitJSON
	if n := len(commits); n > 0 && commits[n-1].ID == after {
		head = &commits[n-1]
	} else {
		c, err := e.commit(ctx, repo, after)
		if err != nil {
			return Event{}, fmt.Errorf("githubemu: push %s: %w", fullName, err)
		}
		head = &c
	}
	return e.push(repo, inst, branch, before, after, created, false, forced, commits, head), nil
}

// BranchDeleted is the push event GitHub sends when branch, last at
// before, is deleted.
func (e *Emulator) BranchDeleted(fullName, branch, before string) (Event, error) {
	e.mu.Lock()
	repo, inst, ok := e.repo(fullName)
	e.mu.Unlock()
	if !ok {
		return Event{}, fmt.Errorf("githubemu: push: unknown repository %s", fullName)
	}
	branch = strings.TrimPrefix(branch, "refs/heads/")
	return e.push(repo, inst, branch, before, zeroSHA, false, true, false, []commitJSON{}, nil), nil
}

func (e *Emulator) push(repo *Repository, inst int64, branch, before, after string, created, deleted, forced bool, commits []commitJSON, head *commitJSON) Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	owner := e.owner(repo.Owner)
	return Event{Name: "push", Payload: pushPayload{
		Ref: "refs/heads/" + branch, Before: before, After: after,
		Created: created, Deleted: deleted, Forced: forced,
		Compare: fmt.Sprintf("%s/%s/compare/%s...%s", e.webBase(), repo.FullName(), before[:12], after[:12]),
		Commits: commits, HeadCommit: head,
		Repository:   e.repoJSON(repo, true),
		Pusher:       commitUser{Name: owner.Login, Email: primaryEmail(owner)},
		Sender:       e.simpleUser(owner),
		Installation: map[string]any{"id": inst, "node_id": nodeID("IntegrationInstallation", inst)},
	}}
}

func primaryEmail(u *User) string {
	for _, m := range u.Emails {
		if m.Primary {
			return m.Email
		}
	}
	return fmt.Sprintf("%d+%s@users.noreply.github.com", u.ID, u.Login)
}

// commit reads one commit of the local repository the way a push payload
// lists it.
func (e *Emulator) commit(ctx context.Context, repo *Repository, sha string) (commitJSON, error) {
	out, err := git(ctx, repo.Dir, "show", "-s", "--format=%H%x00%T%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%B", sha)
	if err != nil {
		return commitJSON{}, err
	}
	f := strings.SplitN(out, "\x00", 8)
	if len(f) != 8 {
		return commitJSON{}, fmt.Errorf("git show %s: unexpected output", sha)
	}
	c := commitJSON{
		ID: f[0], TreeID: f[1], Distinct: true, Message: strings.TrimRight(f[7], "\n"), Timestamp: f[6],
		Author: commitUser{Name: f[2], Email: f[3]}, Committer: commitUser{Name: f[4], Email: f[5]},
		Added: []string{}, Removed: []string{}, Modified: []string{},
	}
	e.mu.Lock()
	c.URL = fmt.Sprintf("%s/%s/commit/%s", e.webBase(), repo.FullName(), c.ID)
	e.mu.Unlock()
	changes, err := git(ctx, repo.Dir, "diff-tree", "--root", "--no-commit-id", "--name-status", "-r", sha)
	if err != nil {
		return commitJSON{}, err
	}
	for line := range strings.Lines(changes) {
		status, path, ok := strings.Cut(strings.TrimRight(line, "\n"), "\t")
		if !ok {
			continue
		}
		switch status[0] {
		case 'A':
			c.Added = append(c.Added, path)
		case 'D':
			c.Removed = append(c.Removed, path)
		default:
			c.Modified = append(c.Modified, path)
		}
	}
	return c, nil
}
