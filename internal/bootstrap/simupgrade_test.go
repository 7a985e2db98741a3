package bootstrap_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/bootstrap/simmachine"
	"github.com/zeitwork/zeitwork/internal/node"
)

// stampedLines is bootstrap's output with the time each line was written
// (bootstrap writes a line at a time), so that a client's failures can be
// set against the step that was running.
type stampedLines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []stampedLine
}

type stampedLine struct {
	at   time.Time
	text string
}

func (s *stampedLines) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, stampedLine{time.Now(), string(p)})
	return s.buf.Write(p)
}

func (s *stampedLines) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// at is when the first line holding substr was written.
func (s *stampedLines) at(substr string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l.text, substr) {
			return l.at, true
		}
	}
	return time.Time{}, false
}

// durations are how long each applied step took, "name: 1.2s", in order.
func (s *stampedLines) durations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	began := map[string]time.Time{}
	for _, l := range s.lines {
		text := strings.TrimSpace(l.text)
		for _, state := range []string{"[apply] ", "[applied] "} {
			if !strings.HasPrefix(text, state) {
				continue
			}
			// The step's name: "<node>: <what>", before its detail.
			name := strings.TrimPrefix(text, state)
			if i := strings.Index(name, ": "); i >= 0 {
				if j := strings.Index(name[i+2:], ": "); j >= 0 {
					name = name[:i+2+j]
				}
			}
			if state == "[apply] " {
				began[name] = l.at
			} else if at, ok := began[name]; ok {
				out = append(out, fmt.Sprintf("%s %v", name, l.at.Sub(at).Round(100*time.Millisecond)))
			}
		}
	}
	return out
}

// edgeLoad is clients looping GETs through the edge, each on a new TLS
// connection, every result kept with its time.
type edgeLoad struct {
	stopLoop context.CancelFunc
	done     sync.WaitGroup
	mu       sync.Mutex
	results  []loadResult
}

type loadResult struct {
	at  time.Time
	err error
}

func loopThroughEdge(ctx context.Context, get func(context.Context, string) (string, error), url string) *edgeLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &edgeLoad{stopLoop: cancel}
	for range 2 {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for ctx.Err() == nil {
				_, err := get(ctx, url)
				if ctx.Err() != nil {
					return // cut by stop, not failed
				}
				l.mu.Lock()
				l.results = append(l.results, loadResult{time.Now(), err})
				l.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	return l
}

// stopAfterAnswer stops the clients once one of them was answered after
// since (or within a minute): the load covers the edge's return too.
func (l *edgeLoad) stopAfterAnswer(since time.Time) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		l.mu.Lock()
		answered := slices.ContainsFunc(l.results, func(r loadResult) bool { return r.err == nil && r.at.After(since) })
		l.mu.Unlock()
		if answered {
			break
		}
	}
	l.stopLoop()
	l.done.Wait()
}

// drainWatch reads, while bootstrap runs, which nodes are draining.
type drainWatch struct {
	stopWatch context.CancelFunc
	done      chan drainSeen
}

type drainSeen struct {
	most  int      // nodes draining at once, at most
	order []string // internal addresses, in the order they were drained
	reads int
}

func watchDraining(ctx context.Context, t *testing.T, pool *pgxpool.Pool) *drainWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &drainWatch{stopWatch: cancel, done: make(chan drainSeen, 1)}
	go func() {
		var seen drainSeen
		defer func() { w.done <- seen }()
		for ctx.Err() == nil {
			rows, err := pool.Query(ctx, "SELECT internal_address FROM nodes WHERE status = $1", string(node.StatusDraining))
			if err == nil {
				var draining []string
				for rows.Next() {
					var a string
					if rows.Scan(&a) == nil {
						draining = append(draining, a)
					}
				}
				rows.Close()
				seen.reads++
				seen.most = max(seen.most, len(draining))
				for _, a := range draining {
					if len(seen.order) == 0 || seen.order[len(seen.order)-1] != a {
						seen.order = append(seen.order, a)
					}
				}
			} else if ctx.Err() == nil {
				t.Logf("reading draining nodes: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *drainWatch) stop() drainSeen {
	w.stopWatch()
	return <-w.done
}

// checkUpgrade holds phase 3b to what an upgrade must do: every node
// restarted onto the new binary, one at a time (workers drained around
// their restart, one at a time, the api and builder answering before the
// next node), and no request through the edge failed.
func checkUpgrade(ctx context.Context, t *testing.T, out string, run *stampedLines, load *edgeLoad, drained drainSeen, binary []byte, version string,
	names []string, machine map[string]*simmachine.Machine, units map[string]string) {
	t.Helper()
	// The order bootstrap printed: operators (op-1 and op-2 run the api
	// too), the workers drained and undrained in turn, the builder, the
	// edge, each waited on before the next.
	var want []string
	for _, n := range names {
		want = append(want, "[apply] "+n+": start ")
		switch {
		case strings.HasPrefix(n, "op-"):
			want = append(want, n+": operator alive again")
			if n != "op-3" {
				want = append(want, n+": api answers /v1/health, version "+version)
			}
		case strings.HasPrefix(n, "wk-"):
			want = append(want, n+": draining node", n+": its instances of active deployments have moved and their replacements are healthy",
				n+": agent restarted and heartbeating", n+": undrained")
		case n == "build-1":
			want = append(want, n+": builder answers /v1/health, version "+version)
		}
		want = append(want, "[applied] "+n+": start ")
	}
	at := 0
	for _, w := range want {
		i := strings.Index(out[at:], w)
		if i < 0 {
			t.Errorf("the upgrade's output lacks %q after position %d", w, at)
			break
		}
		at += i + len(w)
	}

	// The database, read every 100 ms: never two workers draining, each
	// drained once, in the file's order.
	var wantOrder []string
	for _, n := range []string{"wk-1", "wk-2", "wk-3"} {
		wantOrder = append(wantOrder, net.JoinHostPort(machine[n].Addr, "8090"))
	}
	t.Logf("draining, as the database showed it in %d reads: %v (at most %d at once)", drained.reads, drained.order, drained.most)
	if drained.most != 1 || !slices.Equal(drained.order, wantOrder) {
		t.Errorf("workers drained %v, at most %d at once; want %v, one at a time", drained.order, drained.most, wantOrder)
	}

	// Every zeitwork unit runs the new binary: its process's executable
	// (the file it was started from, even once replaced) is the release.
	sum := sha256.Sum256(binary)
	wantSum := hex.EncodeToString(sum[:])
	for _, n := range names {
		cl, err := machine[n].Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range strings.Fields(units[n]) {
			if !strings.HasPrefix(u, "zeitwork-") {
				continue
			}
			got, err := cl.Run(ctx, "sha256sum /proc/$(systemctl show -p MainPID --value "+u+".service)/exe | cut -d' ' -f1", nil)
			if err != nil || strings.TrimSpace(string(got)) != wantSum {
				t.Errorf("%s: %s runs %q (%v), not the new binary %s", n, u, strings.TrimSpace(string(got)), err, wantSum[:16])
			}
		}
		cl.Close()
	}
	// The api says so itself.
	for _, n := range []string{"op-1", "op-2"} {
		resp, err := http.Get("http://" + net.JoinHostPort(machine[n].Addr, "8080") + "/v1/health")
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		var h struct {
			Version string `json:"version"`
		}
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil || h.Version != version {
			t.Errorf("%s: the api reports version %q (%v), want %q", n, h.Version, err, version)
		}
	}

	// Not one request failed, the edge's own restart included: systemd
	// holds its socket (zeitwork-edge.socket), so a connection made
	// while it restarts waits in the backlog for the new edge.
	edgeApplied, ok := run.at("[applied] edge-1: start")
	if !ok {
		t.Fatal("no edge step in the upgrade's output")
	}
	load.mu.Lock()
	defer load.mu.Unlock()
	var answered, failed, afterEdge int
	var failures []string
	for _, r := range load.results {
		switch {
		case r.err == nil:
			answered++
			if r.at.After(edgeApplied) {
				afterEdge++
			}
		default:
			failed++
			if len(failures) < 5 {
				failures = append(failures, fmt.Sprintf("%s: %v", r.at.Format(time.StampMilli), r.err))
			}
		}
	}
	t.Logf("through the edge during the upgrade: %d answered (%d after the edge's restart), %d failed", answered, afterEdge, failed)
	if answered == 0 || afterEdge == 0 {
		t.Errorf("the app did not answer through the edge during the upgrade (%d answered) or after the edge's restart (%d)", answered, afterEdge)
	}
	if failed > 0 {
		t.Errorf("%d requests through the edge failed during the upgrade:\n%s", failed, strings.Join(failures, "\n"))
	}
}
