#!/usr/bin/env bash
# Node agent benchmark: a real agent process on the local stack, against the
# runtime alone as the reference. Needs root. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh up >/dev/null
go build -o /tmp/zeitwork-bench-bin/ ./cmd/zeitwork ./cmd/zeitwork-logwriter
exec go run ./bench/nodeagent -zeitwork /tmp/zeitwork-bench-bin/zeitwork "$@"
