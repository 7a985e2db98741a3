#!/usr/bin/env bash
# Deploy speed: image pushed → deployment active on three node agents,
# against the runtime alone. Needs root and the local stack
# (scripts/deps.sh up). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/zeitwork-bench-bin/ ./cmd/zeitwork ./cmd/zeitwork-logwriter
exec go run ./bench/deploy-speed -zeitwork /tmp/zeitwork-bench-bin/zeitwork "$@"
