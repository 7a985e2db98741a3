#!/usr/bin/env bash
# Task pickup benchmark: task inserted → worker started after the worker
# idled (-idle, 5m by default), against a bare LISTEN/NOTIFY round trip
# on the same Postgres. Needs the local Postgres (scripts/deps.sh up).
# Prints a Markdown table; arguments go to bench/pickup (-idle, -tasks,
# -runs, -gap).
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/zeitwork-bench-pickup ./cmd/zeitwork
exec go run ./bench/pickup -zeitwork /tmp/zeitwork-bench-pickup "$@"
