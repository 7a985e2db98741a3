package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// h2loadReport is what one h2load run printed: the rate, the mean time
// per request (h2load gives no percentiles), the requests done, the
// negotiated cipher, and any failures.
type h2loadReport struct {
	rps      float64
	mean     time.Duration
	requests int64
	cipher   string
	problems []string
}

// parseH2load reads h2load's report.
func parseH2load(out string) (h2loadReport, error) {
	var r h2loadReport
	var haveRPS, haveReqs, haveMean bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "finished in "):
			// finished in 10.00s, 23456.70 req/s, 2.53MB/s
			f := strings.Split(line, ", ")
			if len(f) < 2 || !strings.HasSuffix(f[1], " req/s") {
				return r, fmt.Errorf("h2load: unexpected line %q", line)
			}
			v, err := strconv.ParseFloat(strings.TrimSuffix(f[1], " req/s"), 64)
			if err != nil {
				return r, fmt.Errorf("h2load: %q: %w", line, err)
			}
			r.rps, haveRPS = v, true
		case strings.HasPrefix(line, "requests: "):
			// requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
			counts := map[string]int64{}
			for _, part := range strings.Split(strings.TrimPrefix(line, "requests: "), ", ") {
				n, what, ok := strings.Cut(part, " ")
				v, err := strconv.ParseInt(n, 10, 64)
				if !ok || err != nil {
					return r, fmt.Errorf("h2load: unexpected line %q", line)
				}
				counts[what] = v
			}
			r.requests, haveReqs = counts["succeeded"], true
			for _, bad := range []string{"failed", "errored", "timeout"} {
				if counts[bad] > 0 {
					r.problems = append(r.problems, fmt.Sprintf("%d requests %s", counts[bad], bad))
				}
			}
		case strings.HasPrefix(line, "status codes: "):
			for _, part := range strings.Split(strings.TrimPrefix(line, "status codes: "), ", ") {
				if n, class, ok := strings.Cut(part, " "); ok && class != "2xx" && n != "0" {
					r.problems = append(r.problems, fmt.Sprintf("%s answers %s", n, class))
				}
			}
		case strings.HasPrefix(line, "time for request:"):
			// time for request: min max mean sd +/-sd
			f := strings.Fields(strings.TrimPrefix(line, "time for request:"))
			if len(f) < 3 {
				return r, fmt.Errorf("h2load: unexpected line %q", line)
			}
			d, err := parseH2loadDuration(f[2])
			if err != nil {
				return r, fmt.Errorf("h2load: %q: %w", line, err)
			}
			r.mean, haveMean = d, true
		case strings.HasPrefix(line, "Cipher: "):
			r.cipher = strings.TrimPrefix(line, "Cipher: ")
		}
	}
	if !haveRPS || !haveReqs || !haveMean {
		return r, fmt.Errorf("h2load: no rate, request count or time per request in its report")
	}
	return r, nil
}

// parseH2loadDuration reads h2load's 261us, 2.50ms, 1.02s.
func parseH2loadDuration(s string) (time.Duration, error) {
	for _, unit := range []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, unit.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(unit.d)), nil
		}
	}
	return 0, fmt.Errorf("no unit in %q", s)
}
