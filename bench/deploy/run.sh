#!/usr/bin/env bash
# Deploy benchmark: webhook → serving (cold and warm build cache),
# `zeitwork deploy` of an unchanged directory → serving, image pushed →
# deployment active, on `zeitwork dev --bare` with three simulated nodes,
# each against buildctl and the runtime alone in the same run. Root; the
# local dependencies and base images must be up (scripts/deps.sh up).
# Prints a Markdown table; arguments go to bench/deploy (-runs, -nodes).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/deps.sh env)"
buildctl=$(ls "${ZEITWORK_CACHE:-$HOME/.cache/zeitwork}"/bin/buildctl-* | head -1)
go build -o /tmp/zeitwork-bench-deploy ./cmd/zeitwork
exec go run ./bench/deploy -zeitwork /tmp/zeitwork-bench-deploy -buildctl "$buildctl" "$@"
