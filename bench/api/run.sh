#!/usr/bin/env bash
# API benchmark: webhook accepted → build task picked against a trivial
# task on the same queue, and the read endpoints against GET /v1/health,
# on a real `zeitwork api` process and the local Postgres. Prints a
# Markdown table; arguments go to bench/api (-deliveries, -rounds, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh up >/dev/null
go build -o /tmp/zeitwork-bench-api ./cmd/zeitwork
exec go run ./bench/api -zeitwork /tmp/zeitwork-bench-api "$@"
