package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/bench/internal/wrk"
	"github.com/zeitwork/zeitwork/internal/api"
)

// endpoint is one read the load is pointed at.
type endpoint struct {
	name, path string
	auth       credential
}

type credential int

const (
	anonymous credential = iota
	token
	// cookie is a diagnostic row: a session's lookup only reads, while an
	// API token's also records when it was last used.
	cookie
)

func (c credential) header(w *world) (string, string) {
	switch c {
	case token:
		return "Authorization", "Bearer " + w.token
	case cookie:
		return "Cookie", api.SessionCookie + "=" + w.cookie
	}
	return "", ""
}

// wrkRun is what one wrk run measured.
type wrkRun struct {
	rps       float64
	p50, p99  time.Duration
	requests  int64
	problems  []string      // socket errors and non-2xx answers, as wrk printed them
	cpuPerReq time.Duration // the API process's CPU time per request
}

// reads is every round's run of every endpoint.
type reads struct {
	endpoints []endpoint
	rounds    []map[string]wrkRun
}

func measureReads(ctx context.Context, o options, w *world, proc *apiProc) (reads, error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return reads{}, fmt.Errorf("wrk not found (scripts/deps.sh install puts it there): %w", err)
	}
	eps := []endpoint{
		{"GET /v1/health (reference)", "/v1/health", anonymous},
		{"GET /v1/projects", "/v1/projects", token},
		{"GET /v1/projects/{id}", "/v1/projects/" + w.project.String(), token},
		{"GET /v1/deployments?project_id=", "/v1/deployments?project_id=" + w.project.String(), token},
		{"GET /v1/projects, session cookie", "/v1/projects", cookie},
	}
	// Each answers 200 before it is loaded: wrk counts answers, not 200s.
	for _, ep := range eps {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proc.url+ep.path, nil)
		if k, v := ep.auth.header(w); k != "" {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return reads{}, err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return reads{}, fmt.Errorf("%s: %d", ep.name, res.StatusCode)
		}
		if _, err := runWrk(ctx, o, proc, w, ep, o.warmup); err != nil {
			return reads{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	rd := reads{endpoints: eps}
	for r := range o.rounds {
		order := slices.Clone(eps)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		runs := map[string]wrkRun{}
		for _, ep := range order {
			run, err := runWrk(ctx, o, proc, w, ep, o.duration)
			if err != nil {
				return rd, err
			}
			runs[ep.name] = run
		}
		rd.rounds = append(rd.rounds, runs)
	}
	return rd, nil
}

func runWrk(ctx context.Context, o options, proc *apiProc, w *world, ep endpoint, d time.Duration) (wrkRun, error) {
	args := []string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency"}
	if k, v := ep.auth.header(w); k != "" {
		args = append(args, "-H", k+": "+v)
	}
	args = append(args, proc.url+ep.path)
	before := proc.cpu()
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	cpu := proc.cpu() - before
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %v\n%s", ep.name, err, out)
	}
	if err := proc.alive(); err != nil {
		return wrkRun{}, err
	}
	rep, err := wrk.Parse(string(out))
	run := wrkRun{rps: rep.RPS, p50: rep.P50, p99: rep.P99, requests: rep.Requests, problems: rep.Problems}
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w\n%s", ep.name, err, out)
	}
	if len(run.problems) > 0 {
		return wrkRun{}, fmt.Errorf("wrk %s: %s", ep.name, strings.Join(run.problems, "; "))
	}
	if run.requests > 0 {
		run.cpuPerReq = cpu / time.Duration(run.requests)
	}
	return run, nil
}
