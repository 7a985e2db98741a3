// Package wrk reads the report of the wrk load generator, which the
// benchmarks point at the servers they compare.
package wrk

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Report is what one `wrk --latency` run printed.
type Report struct {
	RPS      float64
	P50, P99 time.Duration
	Requests int64
	// Problems are the socket errors and non-2xx answers, as wrk printed them.
	Problems []string
}

// Parse reads wrk's --latency report.
func Parse(out string) (Report, error) {
	var r Report
	var haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		var err error
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			r.RPS, err = strconv.ParseFloat(f[1], 64)
			haveRPS = true
		case len(f) == 2 && f[0] == "50%":
			r.P50, err = duration(f[1])
			have50 = true
		case len(f) == 2 && f[0] == "99%":
			r.P99, err = duration(f[1])
			have99 = true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, err = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(line, "Socket errors:"), strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.Problems = append(r.Problems, line)
		}
		if err != nil {
			return Report{}, fmt.Errorf("parse %q: %w", line, err)
		}
	}
	if !haveRPS || !have50 || !have99 {
		return Report{}, fmt.Errorf("no Requests/sec, 50%% or 99%% line")
	}
	return r, nil
}

// duration parses wrk's latencies: 812.00us, 1.23ms, 2.01s, 1.50m.
func duration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("unknown unit in %q", s)
}
