package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"
)

// changes is how long route changes took to reach the edge.
type changes struct {
	add, remove []time.Duration
	rss         int64 // the edge's resident memory afterwards, KiB
}

// changeLimit is how long a change may take before the benchmark calls
// NOTIFY broken: well under the edge's one-minute poll.
const changeLimit = 15 * time.Second

// measureChanges adds a verified custom domain n times and times from the
// commit to the edge's first 200 for it, then deletes it and times to the
// first 404. The clock starts when the database acknowledges the commit
// (the NOTIFY goes out at the commit, a little earlier); the edge is asked
// again and again over one keep-alive connection, as fast as it answers.
func measureChanges(ctx context.Context, w *world, edgeAddr string, n int) (*changes, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	c := &changes{}
	for range n {
		did, name, err := w.addDomain(ctx)
		if err != nil {
			return nil, fmt.Errorf("insert domain: %w", err)
		}
		d, err := until(ctx, client, edgeAddr, name, http.StatusOK, time.Now())
		if err != nil {
			return nil, fmt.Errorf("domain %s added: %w", name, err)
		}
		c.add = append(c.add, d)

		if err := w.removeDomain(ctx, did); err != nil {
			return nil, fmt.Errorf("delete domain: %w", err)
		}
		if d, err = until(ctx, client, edgeAddr, name, http.StatusNotFound, time.Now()); err != nil {
			return nil, fmt.Errorf("domain %s deleted: %w", name, err)
		}
		c.remove = append(c.remove, d)
	}
	return c, nil
}

// until asks the edge for host until it answers want, and says how long
// that took since start.
func until(ctx context.Context, client *http.Client, addr, host string, want int, start time.Time) (time.Duration, error) {
	for {
		code, body, err := get(ctx, client, "http://"+addr+"/", host)
		if err != nil {
			return 0, err
		}
		if code == want {
			if want == http.StatusOK && body != backendBody {
				return 0, fmt.Errorf("200 with %q, want %q", tail(body, 200), backendBody)
			}
			return time.Since(start), nil
		}
		if time.Since(start) > changeLimit {
			return 0, fmt.Errorf("still %d after %s, want %d (is LISTEN/NOTIFY reaching the edge?)", code, changeLimit, want)
		}
	}
}

// percentile is the nearest-rank percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
