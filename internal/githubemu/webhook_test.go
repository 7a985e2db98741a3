package githubemu_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-github/v93/github"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// received is one delivery as a receiver using go-github sees it.
type received struct {
	event, delivery, userAgent string
	payload                    any
}

// receiver verifies deliveries the way a production handler does, with
// go-github's ValidatePayload and ParseWebHook, and answers 401 to a bad
// signature.
func receiver(t *testing.T) (string, <-chan received) {
	t.Helper()
	ch := make(chan received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := github.ValidatePayload(r, []byte(webhookSecret))
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ev, err := github.ParseWebHook(github.WebHookType(r), body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ch <- received{event: github.WebHookType(r), delivery: github.DeliveryID(r), userAgent: r.UserAgent(), payload: ev}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

func deliver(t *testing.T, e *env, url string, ch <-chan received, ev githubemu.Event) received {
	t.Helper()
	d, status, err := e.emu.Deliver(t.Context(), url, ev)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusAccepted {
		t.Fatalf("%s delivery answered %d", ev.Name, status)
	}
	got := <-ch // the handler sent before answering
	if got.event != ev.Name || got.delivery != d.ID || !strings.HasPrefix(got.userAgent, "GitHub-Hookshot/") {
		t.Fatalf("delivery headers: event %q id %q (want %q) user agent %q", got.event, got.delivery, d.ID, got.userAgent)
	}
	return got
}

func TestWebhooksParseWithGoGitHub(t *testing.T) {
	e := newEnv(t)
	url, ch := receiver(t)

	ev, err := e.emu.Push(t.Context(), "alice/app", "main", e.first)
	if err != nil {
		t.Fatal(err)
	}
	push := deliver(t, e, url, ch, ev).payload.(*github.PushEvent)
	if push.GetRef() != "refs/heads/main" || push.GetBefore() != e.first || push.GetAfter() != e.head ||
		push.GetCreated() || push.GetDeleted() || push.GetForced() ||
		len(push.Commits) != 1 || push.GetHeadCommit().GetID() != e.head || push.GetHeadCommit().GetMessage() != "add main" ||
		!slices.Equal(push.GetHeadCommit().Added, []string{"main.go"}) || !slices.Equal(push.GetHeadCommit().Modified, []string{"README.md"}) ||
		push.GetRepo().GetFullName() != "alice/app" || push.GetRepo().GetID() != e.repo.ID || !push.GetRepo().GetPrivate() ||
		push.GetRepo().GetDefaultBranch() != "main" || push.GetInstallation().GetID() != e.inst.ID ||
		push.GetSender().GetLogin() != "alice" || push.GetPusher().GetEmail() != "alice@example.com" {
		b, _ := json.Marshal(push)
		t.Fatalf("push event: %s", b)
	}

	ev, err = e.emu.Push(t.Context(), "alice/app", "main", "")
	if err != nil {
		t.Fatal(err)
	}
	created := deliver(t, e, url, ch, ev).payload.(*github.PushEvent)
	if !created.GetCreated() || created.GetBefore() != strings.Repeat("0", 40) || created.GetHeadCommit().GetID() != e.head {
		t.Fatalf("new branch push: created %v before %s", created.GetCreated(), created.GetBefore())
	}

	ev, err = e.emu.BranchDeleted("alice/app", "feature/x", e.head)
	if err != nil {
		t.Fatal(err)
	}
	deleted := deliver(t, e, url, ch, ev).payload.(*github.PushEvent)
	if !deleted.GetDeleted() || deleted.GetRef() != "refs/heads/feature/x" || deleted.GetAfter() != strings.Repeat("0", 40) || deleted.HeadCommit != nil {
		t.Fatalf("branch deletion: %+v", deleted)
	}

	ping := deliver(t, e, url, ch, e.emu.Ping(url)).payload.(*github.PingEvent)
	if ping.GetHookID() == 0 || ping.GetHook().GetID() != ping.GetHookID() || ping.GetHook().Config.GetURL() != url || ping.GetZen() == "" {
		t.Fatalf("ping: %+v", ping)
	}

	ev, err = e.emu.Installation("created", e.inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	inst := deliver(t, e, url, ch, ev).payload.(*github.InstallationEvent)
	if inst.GetAction() != "created" || inst.GetInstallation().GetID() != e.inst.ID || inst.GetInstallation().GetAppID() != appID ||
		inst.GetInstallation().GetAccount().GetLogin() != "alice" || len(inst.Repositories) != 1 || inst.Repositories[0].GetFullName() != "alice/app" {
		t.Fatalf("installation: %+v", inst)
	}

	e.emu.SetSuspended(e.inst.ID, true)
	ev, _ = e.emu.Installation("suspend", e.inst.ID)
	susp := deliver(t, e, url, ch, ev).payload.(*github.InstallationEvent)
	if susp.GetAction() != "suspend" || susp.GetInstallation().SuspendedAt == nil {
		t.Fatalf("suspend: %+v", susp.GetInstallation())
	}

	ev, err = e.emu.InstallationRepositories("removed", e.inst.ID, nil, []githubemu.Repository{e.repo})
	if err != nil {
		t.Fatal(err)
	}
	repos := deliver(t, e, url, ch, ev).payload.(*github.InstallationRepositoriesEvent)
	if repos.GetAction() != "removed" || repos.GetInstallation().GetID() != e.inst.ID || repos.GetRepositorySelection() != "selected" ||
		len(repos.RepositoriesAdded) != 0 || len(repos.RepositoriesRemoved) != 1 || repos.RepositoriesRemoved[0].GetID() != e.repo.ID {
		t.Fatalf("installation_repositories: %+v", repos)
	}
}

func TestPushListsTheCommitsSinceBeforeAndSeesForcePushes(t *testing.T) {
	e := newEnv(t)
	url, ch := receiver(t)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", e.repo.Dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@x")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	os.WriteFile(filepath.Join(e.repo.Dir, "x"), []byte("x"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "third")
	ev, err := e.emu.Push(t.Context(), "alice/app", "main", e.first)
	if err != nil {
		t.Fatal(err)
	}
	p := deliver(t, e, url, ch, ev).payload.(*github.PushEvent)
	if len(p.Commits) != 2 || p.Commits[0].GetID() != e.head || p.Commits[1].GetMessage() != "third" || p.GetForced() {
		t.Fatalf("commits %v, forced %v", p.Commits, p.GetForced())
	}
	git("reset", "-q", "--hard", e.first)
	os.WriteFile(filepath.Join(e.repo.Dir, "y"), []byte("y"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "rewritten")
	ev, _ = e.emu.Push(t.Context(), "alice/app", "main", e.head)
	if p := deliver(t, e, url, ch, ev).payload.(*github.PushEvent); !p.GetForced() || p.GetHeadCommit().GetMessage() != "rewritten" {
		t.Fatalf("force push: forced %v head %q", p.GetForced(), p.GetHeadCommit().GetMessage())
	}
}

func TestTamperedDeliveryFailsValidatePayload(t *testing.T) {
	e := newEnv(t)
	url, ch := receiver(t)
	ev, err := e.emu.Push(t.Context(), "alice/app", "main", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.emu.NewDelivery(ev)
	if err != nil {
		t.Fatal(err)
	}
	if d.Signature != githubemu.Sign(webhookSecret, d.Body) {
		t.Fatal("signature is not the HMAC of the body")
	}
	tampered := d
	tampered.Body = bytes.Replace(d.Body, []byte(e.head), []byte(e.first), 1)
	if status, err := e.emu.Send(t.Context(), url, tampered); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("tampered delivery: status %d, err %v; want 401", status, err)
	}
	// A receiver that knows only the legacy SHA-1 header is not fooled
	// either: both signatures are of the original body.
	tampered.Signature = ""
	if status, err := e.emu.Send(t.Context(), url, tampered); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("tampered delivery with only X-Hub-Signature: status %d, err %v; want 401", status, err)
	}

	unsigned := d
	unsigned.Signature, unsigned.SignatureSHA1 = "", ""
	if status, err := e.emu.Send(t.Context(), url, unsigned); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("unsigned delivery: status %d, err %v; want 401", status, err)
	}

	// The original still validates, and a replay carries the same id.
	for range 2 {
		if status, err := e.emu.Send(t.Context(), url, d); err != nil || status != http.StatusAccepted {
			t.Fatalf("original delivery: status %d, err %v", status, err)
		}
		if got := <-ch; got.delivery != d.ID {
			t.Fatalf("replay id %q, want %q", got.delivery, d.ID)
		}
	}
}

// TestPayloadsUseGitHubsFieldNames holds every field the emulator emits
// against two references: go-github's types (decoding with unknown fields
// disallowed) and payloads GitHub really sent (@octokit/webhooks-examples,
// see testdata/README.md). It also wants every top-level field the examples
// always carry.
func TestPayloadsUseGitHubsFieldNames(t *testing.T) {
	e := newEnv(t)
	raw, err := os.ReadFile("testdata/octokit-webhooks-examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var examples map[string][]any
	if err := json.Unmarshal(raw, &examples); err != nil {
		t.Fatal(err)
	}
	push, _ := e.emu.Push(t.Context(), "alice/app", "main", e.first)
	deleted, _ := e.emu.BranchDeleted("alice/app", "main", e.head)
	inst, _ := e.emu.Installation("created", e.inst.ID)
	repos, _ := e.emu.InstallationRepositories("added", e.inst.ID, []githubemu.Repository{e.repo}, nil)
	// Present only for organisation accounts or repository hooks.
	conditional := map[string][]string{"push": {"organization"}, "ping": {"organization", "repository"}}
	for _, ev := range []githubemu.Event{push, deleted, e.emu.Ping("http://hook.test"), inst, repos} {
		body, err := json.Marshal(ev.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var ours any
		json.Unmarshal(body, &ours)

		known := map[string]bool{}
		always := map[string]int{}
		for _, ex := range examples[ev.Name] {
			paths(ex, "", known)
			for k := range ex.(map[string]any) {
				always[k]++
			}
		}
		if len(known) == 0 {
			t.Fatalf("no examples of %s", ev.Name)
		}
		emitted := map[string]bool{}
		paths(ours, "", emitted)
		var unknown []string
		for p := range emitted {
			if !known[p] {
				unknown = append(unknown, p)
			}
		}
		sort.Strings(unknown)
		if len(unknown) > 0 {
			t.Errorf("%s: fields GitHub does not send: %v", ev.Name, unknown)
		}
		for k, n := range always {
			if n == len(examples[ev.Name]) && !emitted[k] && !slices.Contains(conditional[ev.Name], k) {
				t.Errorf("%s: missing top-level field %q", ev.Name, k)
			}
		}

		strict := ours.(map[string]any)
		for _, p := range goGitHubLacks[ev.Name] {
			if !known[p] {
				t.Errorf("%s: %s is excused from go-github's check but GitHub does not send it either", ev.Name, p)
			}
			drop(strict, p)
		}
		body, _ = json.Marshal(strict)
		typ := reflect.TypeOf(mustParse(t, ev.Name, body)).Elem()
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(reflect.New(typ).Interface()); err != nil {
			t.Errorf("%s: go-github's %s: %v", ev.Name, typ, err)
		}
	}
}

// goGitHubLacks are fields GitHub sends (the examples have them) that
// go-github's event types have no field for.
var goGitHubLacks = map[string][]string{
	"push":                      {"repository.visibility"},
	"ping":                      {"hook.app_id", "hook.deliveries_url"},
	"installation_repositories": {"requester"},
}

// drop deletes the dotted path p from the object m.
func drop(m map[string]any, p string) {
	head, rest, nested := strings.Cut(p, ".")
	if !nested {
		delete(m, head)
		return
	}
	if child, ok := m[head].(map[string]any); ok {
		drop(child, rest)
	}
}

func mustParse(t *testing.T, event string, body []byte) any {
	t.Helper()
	v, err := github.ParseWebHook(event, body)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// paths adds the dotted path of every object key under v; array elements
// share their array's path.
func paths(v any, prefix string, into map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			into[p] = true
			paths(child, p, into)
		}
	case []any:
		for _, child := range v {
			paths(child, prefix, into)
		}
	}
}
