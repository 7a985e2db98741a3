package runtime_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// nextEvent waits for the instance's next event of the given kind.
func nextEvent(t *testing.T, events <-chan runtime.Event, iid uuid.UUID, kind runtime.EventKind) runtime.Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream closed")
			}
			if ev.InstanceID == iid && ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", kind, iid)
		}
	}
}

// eventsOf waits for one event of each kind for iid, in whatever order
// they arrive, and returns them by kind.
func eventsOf(t *testing.T, events <-chan runtime.Event, iid uuid.UUID, kinds ...runtime.EventKind) map[runtime.EventKind]runtime.Event {
	t.Helper()
	got := map[runtime.EventKind]runtime.Event{}
	timeout := time.After(15 * time.Second)
	for len(got) < len(kinds) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream closed")
			}
			if _, seen := got[ev.Kind]; ev.InstanceID == iid && slices.Contains(kinds, ev.Kind) && !seen {
				got[ev.Kind] = ev
			}
		case <-timeout:
			t.Fatalf("events for %s: got %v, want one each of %v", iid, slices.Collect(maps.Keys(got)), kinds)
		}
	}
	return got
}

func TestExitAtOnceIsReportedAndRestartable(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	events, err := r.Events(ctxFor(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s := e.spec(t, map[string]string{"EXIT_CODE": "3"})
	pullCreateStart(t, r, s)

	ev := nextEvent(t, events, s.InstanceID, runtime.EventExit)
	if ev.ExitCode != 3 {
		t.Fatalf("exit event %+v, want code 3", ev)
	}
	st := waitFor(t, r, s.InstanceID, 5*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })
	if st.ExitCode != 3 || st.OOMKilled || st.ExitedAt.IsZero() || st.PID != 0 {
		t.Fatalf("status %+v, want exited with code 3, not OOM", st)
	}
	waitLogs(t, r, s, "exiting at once with 3")

	// A crashed instance is restarted in place: same container, a new
	// process, its log continued.
	if err := r.Start(ctxFor(t, 30*time.Second), s.InstanceID); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, events, s.InstanceID, runtime.EventExit)
	if logs := readLogs(t, r, s); strings.Count(logs, "exiting at once with 3") != 2 {
		t.Fatalf("after a restart the log should hold both runs:\n%s", logs)
	}
}

func TestExitOnRequest(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	events, err := r.Events(ctxFor(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s := e.spec(t, nil)
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/exit?code=0"))
	if ev := nextEvent(t, events, s.InstanceID, runtime.EventExit); ev.ExitCode != 0 {
		t.Fatalf("exit event %+v, want code 0", ev)
	}
	st, _ := r.Status(context.Background(), s.InstanceID)
	if st.State != runtime.StateExited || st.ExitCode != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestOOMKillIsReported(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	events, err := r.Events(ctxFor(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s := e.spec(t, nil)
	s.MemoryMB = 32
	pullCreateStart(t, r, s)
	mustGet(t, url(s, "/alloc?mb=8")) // fits
	if _, err := get(ctxFor(t, 10*time.Second), url(s, "/alloc?mb=64")); err == nil {
		t.Fatal("allocating 72 MiB under a 32 MiB limit succeeded")
	}
	// The shim reports the OOM and the exit from different goroutines:
	// either may come first.
	ev := eventsOf(t, events, s.InstanceID, runtime.EventOOM, runtime.EventExit)[runtime.EventExit]
	if ev.ExitCode != 137 {
		t.Errorf("exit event %+v, want 137 (SIGKILL)", ev)
	}
	st := waitFor(t, r, s.InstanceID, 5*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited && st.OOMKilled })
	if st.ExitCode != 137 {
		t.Errorf("status %+v, want exit code 137", st)
	}

	// Two witnesses, each enough alone: the label recorded from the event
	// (what Kata relies on) and the cgroup's OOM counter (which needs no
	// agent to have been listening). Remove the label: still OOM.
	ctx := namespaces.WithNamespace(context.Background(), e.ns)
	ctr, err := e.raw.LoadContainer(ctx, s.InstanceID.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{"dev.zeitwork.oom": ""}); err != nil {
		t.Fatal(err)
	}
	if labels, _ := ctr.Labels(ctx); labels["dev.zeitwork.oom"] != "" {
		t.Fatal("label not removed")
	}
	if st, _ := r.Status(ctx, s.InstanceID); !st.OOMKilled {
		t.Fatalf("without the label, the cgroup counter should still say OOM: %+v", st)
	}
}

// A limit below what the process needs to start at all ends as an OOM
// exit (or a start error), never as a hang.
func TestMemoryLimitTooSmallToStart(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	s := e.spec(t, nil)
	s.MemoryMB = 1
	ctx := ctxFor(t, 30*time.Second)
	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := r.Start(ctx, s.InstanceID)
	t.Logf("Start with 1 MiB: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err != nil {
		if !strings.Contains(err.Error(), "memory") {
			t.Errorf("start error does not say it is about memory: %v", err)
		}
		st, _ := r.Status(ctx, s.InstanceID)
		if st.State != runtime.StateCreated {
			t.Fatalf("after a failed start: %+v, want created", st)
		}
		return
	}
	st := waitFor(t, r, s.InstanceID, 10*time.Second, func(st runtime.Status) bool { return st.State == runtime.StateExited })
	t.Logf("status: %+v", st)
	if !st.OOMKilled {
		t.Fatalf("1 MiB instance exited without OOM: %+v", st)
	}
}

func TestPullErrors(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, time.Minute)

	err := r.Pull(ctx, e.reg+"/zeitwork-test/no-such-image:v1", nil)
	if !errors.Is(err, runtime.ErrImageNotFound) {
		t.Errorf("missing image: %v, want ErrImageNotFound", err)
	}
	err = r.Pull(ctx, e.image[:strings.LastIndex(e.image, ":")]+":no-such-tag", nil)
	if !errors.Is(err, runtime.ErrImageNotFound) {
		t.Errorf("missing tag: %v, want ErrImageNotFound", err)
	}
	if err := r.Pull(ctx, "Not A Reference", nil); !errors.Is(err, runtime.ErrInvalidSpec) {
		t.Errorf("bad reference: %v, want ErrInvalidSpec", err)
	}

	// A registry not configured for plain HTTP is spoken to over HTTPS only.
	strict := e.runtime(t, func(c *runtime.Config) { c.PlainHTTPRegistries = nil })
	start := time.Now()
	err = strict.Pull(ctx, e.image, nil)
	if err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("pull over HTTPS from a plain-HTTP registry: %v", err)
	}
	t.Logf("HTTPS-only pull from a plain registry fails in %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestPullWithCredentials puts a registry that wants basic auth in front of
// the local one: no or wrong credentials are ErrUnauthorized, the right ones
// pull, and the credential is offered to that registry only.
func TestPullWithCredentials(t *testing.T) {
	e := newEnv(t)
	upstream, _ := neturl.Parse("http://" + e.reg)
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	authed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if u, p, ok := req.BasicAuth(); !ok || u != "deploy" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="zeitwork-test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(authed.Close)
	host := strings.TrimPrefix(authed.URL, "http://")
	ref := host + strings.TrimPrefix(e.image, e.reg)

	r := e.runtime(t, func(c *runtime.Config) { c.PlainHTTPRegistries = []string{host} })
	ctx := ctxFor(t, time.Minute)
	for _, auth := range []*runtime.Auth{nil, {Username: "deploy", Password: "wrong"}} {
		if err := r.Pull(ctx, ref, auth); !errors.Is(err, runtime.ErrUnauthorized) {
			t.Errorf("pull with %v: %v, want ErrUnauthorized", auth, err)
		} else if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if err := r.Pull(ctx, ref, &runtime.Auth{Username: "deploy", Password: "s3cret"}); err != nil {
		t.Fatalf("pull with the right credentials: %v", err)
	}
}

func TestBadCallsEndClearly(t *testing.T) {
	e := newEnv(t)
	r := e.runtime(t)
	ctx := ctxFor(t, time.Minute)

	s := e.spec(t, nil)
	if err := r.Create(ctx, s); !errors.Is(err, runtime.ErrImageNotPulled) {
		t.Errorf("Create before Pull: %v, want ErrImageNotPulled", err)
	}
	bad := s
	bad.Port, bad.CPUMillis, bad.Env = 0, 5, map[string]string{"A=B": "x", "TOKEN": "se\x00cret"}
	err := r.Create(ctx, bad)
	if !errors.Is(err, runtime.ErrInvalidSpec) {
		t.Errorf("invalid spec: %v", err)
	}
	for _, want := range []string{"Port", "CPUMillis", `"A=B"`, "TOKEN"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid spec error %v does not name %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "cret") {
		t.Errorf("error shows a variable's value: %v", err)
	}

	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}
	missing := id.New()
	if err := r.Start(ctx, missing); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Start of a missing instance: %v, want ErrNotFound", err)
	}
	if st, err := r.Status(ctx, missing); err != nil || st.State != runtime.StateMissing {
		t.Errorf("Status of a missing instance: %+v, %v", st, err)
	}
	if _, err := r.Logs(ctx, missing, false); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Logs of a missing instance: %v, want ErrNotFound", err)
	}
	if err := r.Stop(ctx, missing, time.Second); err != nil {
		t.Errorf("Stop of a missing instance: %v", err)
	}
	// Created, never started: no log yet, but not an error.
	if logs := readLogs(t, r, s); logs != "" {
		t.Errorf("log of an instance never started: %q", logs)
	}
}

// Without KVM Kata cannot run here; what can be shown is that the handler
// and the shim's configuration file reach containerd unchanged, and that a
// node without the Kata shim fails at Start, at once and saying why.
func TestKataHandlerWithoutShim(t *testing.T) {
	e := newEnv(t)
	const conf = "/opt/kata/share/defaults/kata-containers/configuration-clh.toml"
	r := e.runtime(t, func(c *runtime.Config) {
		c.RuntimeHandler = runtime.HandlerKata
		c.RuntimeConfigPath = conf
	})
	s := e.spec(t, nil)
	s.HostNetwork = false
	s.CPUMillis, s.MemoryMB = 500, 256
	ctx := ctxFor(t, time.Minute)
	if err := r.Pull(ctx, s.Image, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	info, err := e.raw.ContainerService().Get(namespaces.WithNamespace(ctx, e.ns), s.InstanceID.String())
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime.Name != runtime.HandlerKata {
		t.Fatalf("container runtime %q, want %q", info.Runtime.Name, runtime.HandlerKata)
	}
	opts, err := typeurl.UnmarshalAny(info.Runtime.Options)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := opts.(*runtimeoptions.Options); !ok || o.ConfigPath != conf {
		t.Fatalf("runtime options %#v, want ConfigPath %s", opts, conf)
	}

	start := time.Now()
	err = r.Start(ctx, s.InstanceID)
	took := time.Since(start)
	t.Logf("Start without the Kata shim: %v after %v", err, took.Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "kata") {
		t.Fatalf("Start = %v, want an error naming the kata runtime", err)
	}
	if took > 10*time.Second {
		t.Errorf("failing took %v", took)
	}
	st, err := r.Status(ctx, s.InstanceID)
	if err != nil || st.State != runtime.StateCreated || st.RuntimeHandler != runtime.HandlerKata {
		t.Fatalf("after the failed start: %+v, %v", st, err)
	}
	if err := r.Stop(ctx, s.InstanceID, time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestPullFromAStalledRegistryEnds: a registry that accepts the
// connection and never answers fails the pull with ErrRegistryStalled
// instead of holding it (and the node's convergence) for ever.
func TestPullFromAStalledRegistryEnds(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // accepted, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	host := l.Addr().String()
	r := e.runtime(t, func(c *runtime.Config) {
		c.PullStallTimeout = 500 * time.Millisecond
		c.PlainHTTPRegistries = append(c.PlainHTTPRegistries, host)
	})
	err = r.Pull(ctxFor(t, time.Minute), host+"/zeitwork-test/stalled:1", nil)
	if !errors.Is(err, runtime.ErrRegistryStalled) {
		t.Fatalf("pull from a registry that never answers: %v, want ErrRegistryStalled", err)
	}
}
