#!/usr/bin/env bash
# Build benchmark: Zeitwork's builder against buildctl, each on a buildkitd the
# bench starts with its own state (never the shared one), on the isolated RUN
# network and the registry of scripts/deps.sh. Prints Markdown tables.
# Needs root (buildkitd) and `scripts/deps.sh up` done.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${ZEITWORK_CACHE:-$HOME/.cache/zeitwork}/bin"
eval "$(scripts/deps.sh env)"
exec go run ./bench/build -registry "$REGISTRY_ADDR" \
  -buildctl "$(ls "$bin"/buildctl-* | head -1)" -buildkitd "$(ls "$bin"/buildkitd-* | head -1)" \
  -cni-bin "$(ls -d "$bin"/cni-* | head -1)" "$@"
