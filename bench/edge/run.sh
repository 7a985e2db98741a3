#!/usr/bin/env bash
# Edge proxy benchmark (issues #6, #15): the same backend behind `zeitwork
# edge` (both data paths), a bare fasthttp proxy and nginx, the same wrk
# run against each, alternating over ROUNDS rounds; the route table with
# 100,000 projects (Go benchmarks); and route changes from the database to
# the edge. Needs root, nginx and wrk
# (scripts/deps.sh install). Prints a Markdown table; extra arguments go to
# the benchmark (go run ./bench/edge -h lists them). Over TLS it needs h2load
# too (nghttp2-client, also from scripts/deps.sh install).
#
#   ROUNDS=3 DURATION=10s CONNECTIONS=64 THREADS=2 COUNT=3 bash bench/edge/run.sh
#
# The route table at scale alone (issue #15: the edge's memory with 100,000
# projects after a full rebuild, under wrk, the snapshot's size and restore):
#
#   bash bench/edge/run.sh -memory -rounds 3 -duration 5s -memory-env "GOGC=100 GOMEMLIMIT=off"
#
# The proxies on CPUs of their own, as in production (wrk and the app on the
# others; nginx gets a worker per proxy CPU, the edge a loop per CPU):
#
#   bash bench/edge/run.sh -hosts 0 -proxy-cpus 1 -load-cpus 0
#
# The default data path against nginx alone, in more rounds for the time
# (the report gives each round's ratio too: rounds minutes apart share the
# host's weather):
#
#   ROUNDS=9 bash bench/edge/run.sh -hosts 0 -tls=false -h2=false -paths loop -fields=false -fasthttp ""
#
# A loop edge with a setting of its own beside the default (repeatable):
#
#   ROUNDS=6 bash bench/edge/run.sh -hosts 0 -tls=false -h2=false -paths loop -fields=false -fasthttp "" \
#     -proxy-cpus 1 -load-cpus 0 -loop-env EDGE_LOOP_SPIN=0 -loop-env EDGE_LOOP_SPIN=20us
#
# (EDGE_LOOP_SPIN=0: the loop parks at once instead of spinning its default 10 µs.)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh up >/dev/null
# edgepprof: EDGE_PPROF_ADDR serves net/http/pprof (for -profile DIR).
go build -tags edgepprof -o /tmp/zw-edge-bench ./cmd/zeitwork
go build -o /tmp/zw-edge-bench-backend ./bench/edge/backend
go build -o /tmp/zw-edge-bench-fasthttp ./bench/edge/fasthttpproxy

gobench=$(mktemp)
trap 'rm -f "$gobench"' EXIT
if ! go test -run '^$' -bench '100kHosts' -benchmem -count "${COUNT:-3}" ./internal/edge/ >"$gobench" 2>&1; then
	cat "$gobench" >&2
	echo "bench/edge: go test -bench 100kHosts ./internal/edge/ failed" >&2
	exit 1
fi

go run ./bench/edge -zeitwork /tmp/zw-edge-bench -backend /tmp/zw-edge-bench-backend -fasthttp /tmp/zw-edge-bench-fasthttp -gobench "$gobench" \
	-rounds "${ROUNDS:-3}" -duration "${DURATION:-10s}" -connections "${CONNECTIONS:-64}" -threads "${THREADS:-2}" "$@"
