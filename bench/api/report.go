package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

func report(out io.Writer, o options, pks []pickup, rd reads) {
	fmt.Fprintf(out, "Machine: %s, %d CPUs (shared), %s\n\n", cpuModel(), runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))

	if len(pks) > 0 {
		fmt.Fprintf(out, "Webhook accepted → build task picked (%d deliveries per spacing, alternating with as many reference tasks):\n\n", o.deliveries)
		fmt.Fprintln(out, "| spacing | measurement | p50 | p95 | max |")
		fmt.Fprintln(out, "|---|---|---|---|---|")
	}
	for _, pk := range pks {
		spacing := fmt.Sprintf("%s pause before each", pk.gap)
		if pk.gap == 0 {
			spacing = "back to back"
		}
		row := func(name string, d []time.Duration) {
			fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", spacing, name, ms(percentile(d, 50)), ms(percentile(d, 95)), ms(slices.Max(d)))
		}
		row("push: 2xx answer → build task picked", pk.hook)
		row("reference: trivial task committed → picked", pk.ref)
		row("push: request → 2xx answer (the webhook's own time)", pk.answer)
	}

	if len(rd.rounds) == 0 {
		return
	}
	fmt.Fprintf(out, "\nRead endpoints (wrk, %d thread(s), %d connections, %d × %s rounds alternating the order; median of the rounds):\n\n",
		o.threads, o.conns, len(rd.rounds), o.duration)
	fmt.Fprintln(out, "| endpoint | requests/s | p50 | p99 | API CPU per request |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	for _, ep := range rd.endpoints {
		var rps, p50, p99, cpu []float64
		for _, r := range rd.rounds {
			w := r[ep.name]
			rps, p50, p99, cpu = append(rps, w.rps), append(p50, float64(w.p50)), append(p99, float64(w.p99)), append(cpu, float64(w.cpuPerReq))
		}
		fmt.Fprintf(out, "| %s | %.0f | %s | %s | %s |\n", ep.name, median(rps),
			ms(time.Duration(median(p50))), ms(time.Duration(median(p99))), us(time.Duration(median(cpu))))
	}
	fmt.Fprintf(out, "\nEvery round (requests/s, p99):\n\n")
	for i, r := range rd.rounds {
		var parts []string
		for _, ep := range rd.endpoints {
			parts = append(parts, fmt.Sprintf("%s %.0f/s %s", ep.path[:min(len(ep.path), 16)], r[ep.name].rps, ms(r[ep.name].p99)))
		}
		fmt.Fprintf(out, "- round %d: %s\n", i+1, strings.Join(parts, "; "))
	}
}

// percentile is the nearest-rank p-th percentile.
func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}
