#!/usr/bin/env bash
# Build benchmark: Zeitwork's builder against buildctl on the same buildkitd
# and registry. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh up >/dev/null 2>&1
buildctl=$(ls "${ZEITWORK_CACHE:-$HOME/.cache/zeitwork}"/bin/buildctl-* | head -1)
exec go run ./bench/build -buildctl "$buildctl" "$@"
