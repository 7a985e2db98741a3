#!/usr/bin/env bash
# Scheduler benchmarks, each against the naive reference (sort every eligible
# node for every instance) in the same run. Pure CPU, no dependencies.
#   - 10,000 deployments of 3 instances over 1,000 nodes, capacity consumed
#     between deployments: time per 10k deployments and placements/s;
#   - one deployment at a time on a 10,000-node cluster: p50/p99/max of each
#     placement, on the thread's CPU clock (the placement's own cost) and on
#     the wall clock (which on a shared machine mostly measures the others).
#   - the operator's whole placement on 10,000 node rows in Postgres: reading
#     every row per placement (as before node.View) against the in-memory
#     view, plus the scheduler (needs the local Postgres: scripts/deps.sh up).
# Prints Markdown tables; extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench 'Place(Naive)?10kDeployments' -benchtime "${BENCHTIME:-1x}" -count "${COUNT:-3}" "$@" ./internal/scheduler/ >/tmp/zeitwork-bench-scheduler.txt
go test -run '^$' -bench 'PlaceOne' -benchtime 2000x -count "${COUNT:-3}" "$@" ./internal/scheduler/ >>/tmp/zeitwork-bench-scheduler.txt
eval "$(scripts/deps.sh env)"
go test -run '^$' -bench 'ReadAndPlaceOn10kNodes' -benchtime 100x -count "${COUNT:-3}" ./internal/operator/ >/tmp/zeitwork-bench-operator.txt
awk '
	/^cpu:/ { sub(/^cpu: */, ""); cpu = $0 }
	/^BenchmarkPlace10k|^BenchmarkPlaceNaive10k/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i++) {
			if ($(i+1) == "ns/op") ms[name] = ms[name] " " sprintf("%.0f", $i / 1e6)
			if ($(i+1) == "placements/s") ps[name] = ps[name] " " sprintf("%.0f", $i)
		}
	}
	/^BenchmarkPlaceOne/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i++) if ($(i+1) ~ /-µs$/) one[name, $(i+1)] = one[name, $(i+1)] " " sprintf("%.0f", $i)
		names[name] = 1
	}
	END {
		print "CPU: " cpu "\n"
		print "| benchmark | ms per 10k deployments | placements/s |"
		print "|---|---|---|"
		for (n in ms) print "| " n " |" ms[n] " |" ps[n] " |"
		print "\n| one deployment on 10k nodes | CPU p50 µs | CPU p99 µs | CPU max µs | wall p50 µs | wall p99 µs |"
		print "|---|---|---|---|---|---|"
		for (n in names) print "| " n " |" one[n, "cpu-p50-µs"] " |" one[n, "cpu-p99-µs"] " |" one[n, "cpu-max-µs"] " |" one[n, "wall-p50-µs"] " |" one[n, "wall-p99-µs"] " |"
	}' /tmp/zeitwork-bench-scheduler.txt
awk '
	/^BenchmarkReadAndPlace/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i++) if ($(i+1) ~ /-µs$/) v[name, $(i+1)] = v[name, $(i+1)] " " sprintf("%.0f", $i)
		names[name] = 1
	}
	END {
		print "\n| operator: read the nodes + place one deployment, 10k nodes | CPU p50 µs | CPU p99 µs | wall p50 µs | read p50 µs |"
		print "|---|---|---|---|---|"
		for (n in names) print "| " n " |" v[n, "cpu-read+place-p50-µs"] " |" v[n, "cpu-read+place-p99-µs"] " |" v[n, "read+place-p50-µs"] " |" v[n, "read-p50-µs"] " |"
	}' /tmp/zeitwork-bench-operator.txt
