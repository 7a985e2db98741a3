#!/usr/bin/env bash
# First pull of a base image onto a node: the runtime with user namespaces
# (layers re-owned as they are unpacked) against containerd's own pull and
# unpack. Needs root, the local stack and its base images
# (scripts/deps.sh up). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh up >/dev/null
exec go run ./bench/pull "$@"
