#!/usr/bin/env bash
# Scheduler benchmark: 10,000 deployments of 3 instances over 1,000 nodes,
# capacity consumed between deployments, against the naive reference (sort
# every eligible node for every instance) in the same run. Pure CPU, no
# dependencies. Prints a Markdown table; extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench 'Place' -count "${COUNT:-3}" "$@" ./internal/scheduler/ |
	awk '
	/^cpu:/ { sub(/^cpu: */, ""); cpu = $0 }
	/^BenchmarkPlace/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i++) {
			if ($(i+1) == "ns/op") ms[name] = ms[name] " " sprintf("%.0f", $i / 1e6)
			if ($(i+1) == "placements/s") ps[name] = ps[name] " " sprintf("%.0f", $i)
		}
	}
	END {
		print "CPU: " cpu "\n"
		print "| benchmark | ms per 10k deployments | placements/s |"
		print "|---|---|---|"
		for (n in ms) print "| " n " |" ms[n] " |" ps[n] " |"
	}'
