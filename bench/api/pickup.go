package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/queue"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// pickup is what the first measurement found with one spacing of the
// tasks.
type pickup struct {
	gap time.Duration // between one task's pickup and the next one's start
	// hook: from the webhook's 2xx to its build task picked; answer: the
	// webhook's own request time; ref: from the reference task's commit to
	// its pickup.
	hook, answer, ref []time.Duration
}

// picked is a task as the worker saw it start.
type picked struct {
	build uuid.UUID // the build task's build; zero for a reference task
	seq   int       // the reference task's number
	at    time.Time
}

// refTask is the reference: a task with nothing to do, on the builders'
// queue.
type refTask struct {
	Seq int `json:"seq"`
}

func (refTask) Kind() string { return "bench_reference" }

func (refTask) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: build.Queue} }

// recorder works both kinds of task by noting when it started them.
type recorder[T queue.Task] struct {
	river.WorkerDefaults[T]
	picks chan<- picked
	pick  func(T) picked
}

func (r *recorder[T]) Work(_ context.Context, job *queue.Job[T]) error {
	p := r.pick(job.Args)
	p.at = time.Now()
	r.picks <- p
	return nil
}

// queueConfig is the builder role's queue configuration, its defaults.
func queueConfig() (config.Queue, error) {
	return config.ParseFrom[config.Queue](map[string]string{})
}

// measurePickup times n deliveries and n reference tasks, alternating, with
// each spacing in gaps.
//
// The spacing matters because of how River wakes a worker. An insert sends
// a NOTIFY (at most one per queue per FetchCooldown from each inserting
// client), and the worker fetches on it at once unless it fetched less
// than FetchCooldown ago, in which case the fetch waits out the cooldown;
// a task whose notification the inserter held back waits for the worker's
// poll (FetchPollInterval, 1 s). internal/queue sets the cooldown to 1 ms
// (River's default is 100 ms); back to back shows what that buys.
func measurePickup(ctx context.Context, w *world, apiURL string, n int, gaps []time.Duration) ([]pickup, error) {
	cfg, err := queueConfig()
	if err != nil {
		return nil, err
	}
	picks := make(chan picked, 16)
	workers := queue.NewWorkers(build.Queue)
	queue.Register(workers, &recorder[build.Task]{picks: picks, pick: func(t build.Task) picked { return picked{build: t.BuildID} }})
	queue.Register(workers, &recorder[refTask]{picks: picks, pick: func(t refTask) picked { return picked{seq: t.Seq} }})
	// The worker is its own client on its own pool, as a builder process
	// would be; the reference is enqueued through an insert-only client,
	// as the API's is.
	worker, err := queue.New(w.pool, workers, cfg, zlog.Discard())
	if err != nil {
		return nil, err
	}
	if err := worker.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(sctx)
	}()
	inserter, err := queue.New(w.pool, nil, cfg, zlog.Discard())
	if err != nil {
		return nil, err
	}
	// A first task of each kind, untimed, warms the connections and the
	// API's code paths.
	if err := referenceOnce(ctx, inserter, picks, -1, nil); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if _, _, err := deliverOnce(ctx, w, apiURL, picks, -1); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var all []pickup
	for g, gap := range gaps {
		res, err := pickupRun(ctx, w, apiURL, inserter, picks, n, gap, g*n)
		if err != nil {
			return nil, err
		}
		all = append(all, res)
	}
	return all, nil
}

// pickupRun is one spacing's run; seq numbers the pushes' commits.
func pickupRun(ctx context.Context, w *world, apiURL string, inserter *queue.Queue, picks <-chan picked, n int, gap time.Duration, seq int) (pickup, error) {
	pause := func() error {
		select {
		case <-time.After(gap):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res := pickup{gap: gap}
	for j := range n {
		i := seq + j
		// Strictly alternating, so that each client's tasks are apart by
		// the other's: tasks one client inserts within FetchCooldown of
		// each other share a wake-up, and the later ones wait for the poll.
		first, second := func() error { return referenceOnce(ctx, inserter, picks, i, &res.ref) }, func() error {
			hook, answer, err := deliverOnce(ctx, w, apiURL, picks, i)
			res.hook, res.answer = append(res.hook, hook), append(res.answer, answer)
			return err
		}
		for _, step := range []func() error{pause, first, pause, second} {
			if err := step(); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// referenceOnce enqueues reference task seq and waits for its pickup.
func referenceOnce(ctx context.Context, q *queue.Queue, picks <-chan picked, seq int, into *[]time.Duration) error {
	if _, err := q.Enqueue(ctx, refTask{Seq: seq}); err != nil {
		return err
	}
	committed := time.Now()
	p, err := wait(ctx, picks)
	if err != nil {
		return err
	}
	if p.build != uuid.Nil || p.seq != seq {
		return fmt.Errorf("reference %d: picked %+v instead", seq, p)
	}
	if into != nil {
		*into = append(*into, p.at.Sub(committed))
	}
	return nil
}

// deliverOnce posts push number seq, signed, and waits for its build task.
func deliverOnce(ctx context.Context, w *world, apiURL string, picks <-chan picked, seq int) (hook, answer time.Duration, err error) {
	sum := sha256.Sum256(fmt.Appendf(nil, "bench commit %d", seq))
	sha := hex.EncodeToString(sum[:20])
	body, err := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "before": strings.Repeat("0", 40), "after": sha, "created": false, "deleted": false, "forced": false,
		"repository": map[string]any{"id": repositoryID, "name": "app", "full_name": repoFullName},
		"pusher":     map[string]any{"name": "octocat", "email": "octocat@github.com"},
		"head_commit": map[string]any{
			"id": sha, "tree_id": strings.Repeat("e", 40), "message": fmt.Sprintf("Change %d", seq), "timestamp": "2026-12-02T04:00:00Z",
			"author": map[string]any{"name": "Octo Cat", "email": "octocat@github.com", "username": "octocat"},
		},
		"installation": map[string]any{"id": installationID},
	})
	if err != nil {
		return 0, 0, err
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/webhook/github", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", uuid.NewString())
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	sent := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	out, err := io.ReadAll(res.Body)
	res.Body.Close()
	answered := time.Now()
	if err != nil {
		return 0, 0, err
	}
	var r struct{ Deployments []uuid.UUID }
	if res.StatusCode != http.StatusOK || json.Unmarshal(out, &r) != nil || len(r.Deployments) != 1 {
		return 0, 0, fmt.Errorf("delivery %d: %d %s", seq, res.StatusCode, out)
	}
	p, err := wait(ctx, picks)
	if err != nil {
		return 0, 0, err
	}
	// Checked after the clock stopped: the task picked is this delivery's.
	var dep uuid.UUID
	if err := w.pool.QueryRow(ctx, `SELECT deployment_id FROM builds WHERE id = $1`, p.build).Scan(&dep); err != nil || dep != r.Deployments[0] {
		return 0, 0, fmt.Errorf("delivery %d made deployment %s; the worker picked build %s of %s (%v)", seq, r.Deployments[0], p.build, dep, err)
	}
	return p.at.Sub(answered), answered.Sub(sent), nil
}

// wait is the next pickup, or an error after a minute: a build task a
// minute late is a finding in itself.
func wait(ctx context.Context, picks <-chan picked) (picked, error) {
	select {
	case p := <-picks:
		return p, nil
	case <-time.After(time.Minute):
		return picked{}, fmt.Errorf("no task picked within a minute")
	case <-ctx.Done():
		return picked{}, ctx.Err()
	}
}
