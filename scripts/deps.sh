#!/usr/bin/env bash
# Local dependencies of Zeitwork: Postgres, MinIO, registry (distribution v3), buildkitd, containerd.
#
#   scripts/deps.sh install   apt packages + build pinned binaries into a cache outside the repo
#   scripts/deps.sh up        install, then start every daemon that is not healthy, wait for health,
#                             and push the builder's base images (scripts/base-images.sh)
#   scripts/deps.sh down      stop the daemons started by `up` (data is kept)
#   scripts/deps.sh status    one line per daemon: healthy/unhealthy + endpoint (exit 1 if any unhealthy)
#   scripts/deps.sh env       export lines for the endpoints (eval "$(scripts/deps.sh env)")
#
# Runs as root on Debian 12. Idempotent: a second `up` with everything healthy is a quick no-op.
# Config templates live in deploy/dev/*.tmpl and are rendered into the state directory; the
# endpoints and health paths are in deploy/dev/deps.env, which internal/devenv reads too.
set -euo pipefail

# ---- pinned versions (registry/buildkitd come from tools/*/go.mod: one source of truth) ----
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$(realpath -m "${ZEITWORK_CACHE:-${HOME:-/root}/.cache/zeitwork}")"
BIN_CACHE="$CACHE/bin"
STATE="$(realpath -m "${ZEITWORK_DEV_STATE:-/var/lib/zeitwork-dev}")"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
TEMPLATES="$REPO_ROOT/deploy/dev"

# busybox-static: a static shell for base images that tests build locally (no registry reachable).
# openssh-server: a real sshd for the bootstrap SSH tests (run in inetd mode, never as a service).
# chromium: the headless browser the dashboard's browser test (test/web) drives.
# isal: igzip, which the node agent's containerd client unpacks image layers with (3.5x Go's gzip).
APT_PACKAGES=(postgresql containerd runc nftables iproute2 isal curl ca-certificates busybox-static nginx-light wrk nghttp2-client openssh-server chromium pgbackrest)

# ---- fixed local endpoints: one file, read by internal/devenv as well ----
# shellcheck source=../deploy/dev/deps.env
source "$TEMPLATES/deps.env"
RUN=$ZEITWORK_DEV_RUN
PG_SOCKDIR="$RUN/postgres"
BUILDKIT_SOCK="${BUILDKIT_ADDR#unix://}"
CONTAINERD_SOCK="$CONTAINERD_ADDR"
port_of() { echo "${1##*:}"; }

DAEMONS=(postgres minio registry containerd buildkitd)

export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

# ---------------------------------------------------------------- helpers
log() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local d=$(( ${EPOCHREALTIME/[.,]/} - $1 )); printf '%d.%01ds' $((d / 1000000)) $((d % 1000000 / 100000)); }

# step NAME CMD...: run CMD and print how long it took (nothing when CMD found its result cached)
CACHED=()
step() {
  local name=$1 t0 n=${#CACHED[@]}; shift
  t0=${EPOCHREALTIME/[.,]/}
  "$@"
  ((${#CACHED[@]} > n)) || log "$name: done in $(elapsed "$t0")"
}

module_version() { # module_version TOOLDIR MODULE -> version from the tools module's go.mod
  local v
  v=$(awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$REPO_ROOT/tools/$1/go.mod")
  [[ -n "$v" ]] || die "cannot find $2 in tools/$1/go.mod"
  echo "$v"
}
REGISTRY_VERSION=$(module_version registry github.com/distribution/distribution/v3)
BUILDKIT_VERSION=$(module_version buildkitd github.com/moby/buildkit)
PEBBLE_VERSION=$(module_version pebble github.com/letsencrypt/pebble/v2)
CNI_VERSION=$(module_version cni github.com/containernetworking/plugins)
TAILSCALE_VERSION=$(module_version tailscale tailscale.com)
H2SPEC_VERSION=$(module_version h2spec github.com/summerwind/h2spec)

MINIO_BIN="$BIN_CACHE/minio-$MINIO_VERSION"
REGISTRY_BIN="$BIN_CACHE/registry-$REGISTRY_VERSION"
BUILDKITD_BIN="$BIN_CACHE/buildkitd-$BUILDKIT_VERSION"
BUILDCTL_BIN="$BIN_CACHE/buildctl-$BUILDKIT_VERSION"
PEBBLE_BIN="$BIN_CACHE/pebble-$PEBBLE_VERSION" # the ACME server the edge's TLS tests issue from
H2SPEC_BIN="$BIN_CACHE/h2spec-$H2SPEC_VERSION" # HTTP/2 conformance of the edge's own server
# The bootstrap's Tailscale test: tailscaled and its CLI for the simulated machines, and a control
# server + DERP relay (tools/tailscale/testcontrol, Tailscale's own test control server).
TAILSCALED_BIN="$BIN_CACHE/tailscaled-$TAILSCALE_VERSION"
TAILSCALE_BIN="$BIN_CACHE/tailscale-$TAILSCALE_VERSION"
TAILSCALE_CONTROL_BIN="$BIN_CACHE/tailscale-testcontrol-$TAILSCALE_VERSION"
CNI_DIR="$BIN_CACHE/cni-$CNI_VERSION"          # bridge, host-local, loopback: buildkitd's RUN network

# buildkitd's RUN steps: "isolated" (a network namespace of their own on BUILD_BRIDGE, internet
# only, policed by the nftables table BUILD_TABLE) or "host" (the host's network: anything the
# host reaches, Postgres and the registry included; the builder refuses it unless BUILD_NETWORK=host).
BUILD_NETWORK=${ZEITWORK_BUILD_NETWORK:-isolated}
BUILD_BRIDGE=zwdev-build0
BUILD_SUBNET=10.213.77.0/24
BUILD_TABLE=zeitwork_dev_build
case $BUILD_NETWORK in
  isolated) BUILD_NET_MODE=cni ;;
  host) BUILD_NET_MODE=host ;;
  *) printf '[deps] ERROR: ZEITWORK_BUILD_NETWORK=%s: want isolated or host\n' "$BUILD_NETWORK" >&2; exit 1 ;;
esac
# The host's IPv4 resolvers, which RUN steps are told about: the one private address they may
# reach (port 53 only). A loopback resolver is replaced by public ones by buildkitd itself.
BUILD_RESOLVERS4=$(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^127\./ { printf "%s%s", sep, $2; sep = ", " }' /etc/resolv.conf 2>/dev/null || true)
[[ -z "$BUILD_RESOLVERS4" ]] || BUILD_RESOLVERS4="elements = { $BUILD_RESOLVERS4 }"

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [[ -n "$d" && -x "$d/postgres" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (run: $0 install)"
  echo "$d"
}

# expand TEMPLATE: the template with @STATE@, @RUN@ and the deps.env values it names substituted
expand() {
  sed -e "s|@STATE@|$STATE|g" -e "s|@RUN@|$RUN|g" -e "s|@PG_PORT@|$PG_PORT|g" \
      -e "s|@S3_ENDPOINT@|$S3_ENDPOINT|g" -e "s|@S3_REGION@|$S3_REGION|g" -e "s|@S3_BUCKET@|$S3_BUCKET|g" \
      -e "s|@S3_ACCESS_KEY@|$S3_ACCESS_KEY_ID|g" -e "s|@S3_SECRET_KEY@|$S3_SECRET_ACCESS_KEY|g" \
      -e "s|@REGISTRY_ADDR@|$REGISTRY_ADDR|g" -e "s|@BUILD_NET_MODE@|$BUILD_NET_MODE|g" \
      -e "s|@BUILD_CNI_DIR@|$CNI_DIR|g" -e "s|@BUILD_BRIDGE@|$BUILD_BRIDGE|g" -e "s|@BUILD_SUBNET@|$BUILD_SUBNET|g" \
      -e "s|@BUILD_TABLE@|$BUILD_TABLE|g" -e "s|@BUILD_RESOLVERS4@|$BUILD_RESOLVERS4|g" \
      -e "s|@BUILD_CLUSTER4@||g" -e "s|@BUILD_CLUSTER6@||g" "$TEMPLATES/$1"
}

# stale TEMPLATE DEST: 0 if DEST differs from what TEMPLATE renders to
stale() {
  ! expand "$1" | cmp -s - "$2"
}

# render TEMPLATE DEST: write the expanded TEMPLATE to DEST; returns 0 if DEST changed
render() {
  local tmp changed=1
  tmp=$(mktemp)
  expand "$1" >"$tmp"
  if [[ -f "$2" ]] && cmp -s "$tmp" "$2"; then changed=0; fi
  if ((changed)); then mv "$tmp" "$2"; chmod 644 "$2"; else rm -f "$tmp"; fi
  return $((1 - changed))
}

# ---------------------------------------------------------------- install
apt_install() {
  local missing=() p installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null || true)
  for p in "${APT_PACKAGES[@]}"; do
    grep -qx "$p install ok installed" <<<"$installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    CACHED+=("apt: ${APT_PACKAGES[*]}")
    return
  fi
  [[ $EUID -eq 0 ]] || die "apt: missing ${missing[*]}; run as root"
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_go() {
  command -v go >/dev/null || die "go is required to build the dev binaries (not found in PATH or /usr/local/go/bin)"
}

# go_build_tool DEST TOOLDIR PKG: build PKG from the tools module into DEST atomically
go_build_tool() {
  local dest=$1 dir=$2 pkg=$3
  if [[ -x "$dest" ]]; then CACHED+=("$(basename "$dest")"); return; fi
  need_go
  log "$(basename "$dest"): building $pkg (tools/$dir) ..."
  (cd "$REPO_ROOT/tools/$dir" && GOWORK=off GOFLAGS= go build -o "$dest.tmp.$$" "$pkg") || { rm -f "$dest.tmp.$$"; die "build of $pkg failed"; }
  mv -f "$dest.tmp.$$" "$dest"
}

build_cni() { # the three CNI plugins buildkitd's RUN network needs, from tools/cni
  if [[ -x "$CNI_DIR/bridge" && -x "$CNI_DIR/host-local" && -x "$CNI_DIR/loopback" ]]; then CACHED+=("cni-$CNI_VERSION"); return; fi
  need_go
  log "cni-$CNI_VERSION: building bridge, host-local, loopback (tools/cni) ..."
  local tmp="$CNI_DIR.tmp.$$" p="github.com/containernetworking/plugins/plugins"
  mkdir -p "$tmp"
  (cd "$REPO_ROOT/tools/cni" && GOWORK=off GOFLAGS= go build -o "$tmp/" "$p/main/bridge" "$p/ipam/host-local" "$p/main/loopback") || { rm -rf "$tmp"; die "build of the CNI plugins failed"; }
  rm -rf "$CNI_DIR"
  mv -f "$tmp" "$CNI_DIR"
}

build_minio() {
  if [[ -x "$MINIO_BIN" ]]; then CACHED+=("$(basename "$MINIO_BIN")"); return; fi
  need_go
  local tmpbin="$BIN_CACHE/.minio-build.$$"
  log "$(basename "$MINIO_BIN"): go install $MINIO_MODULE@$MINIO_VERSION (several minutes when cold) ..."
  mkdir -p "$tmpbin"
  (cd / && GOBIN="$tmpbin" GOFLAGS= go install "$MINIO_MODULE@$MINIO_VERSION") || { rm -rf "$tmpbin"; die "build of minio failed"; }
  mv -f "$tmpbin/minio" "$MINIO_BIN"
  rm -rf "$tmpbin"
}

cmd_install() {
  local t0; t0=${EPOCHREALTIME/[.,]/}
  step "apt packages" apt_install
  mkdir -p "$BIN_CACHE"
  # One builder at a time per cache (parallel `up`s on one machine share the binaries).
  exec 9>"$BIN_CACHE/.lock"
  flock 9
  step "minio $MINIO_VERSION" build_minio
  step "registry $REGISTRY_VERSION" go_build_tool "$REGISTRY_BIN" registry github.com/distribution/distribution/v3/cmd/registry
  step "buildkitd $BUILDKIT_VERSION" go_build_tool "$BUILDKITD_BIN" buildkitd github.com/moby/buildkit/cmd/buildkitd
  step "buildctl $BUILDKIT_VERSION" go_build_tool "$BUILDCTL_BIN" buildkitd github.com/moby/buildkit/cmd/buildctl
  step "cni $CNI_VERSION" build_cni
  step "pebble $PEBBLE_VERSION" go_build_tool "$PEBBLE_BIN" pebble github.com/letsencrypt/pebble/v2/cmd/pebble
  step "h2spec $H2SPEC_VERSION" go_build_tool "$H2SPEC_BIN" h2spec github.com/summerwind/h2spec/cmd/h2spec
  # Static: they run on the simulated machines, whatever their libc.
  CGO_ENABLED=0 step "tailscaled $TAILSCALE_VERSION" go_build_tool "$TAILSCALED_BIN" tailscale tailscale.com/cmd/tailscaled
  CGO_ENABLED=0 step "tailscale $TAILSCALE_VERSION" go_build_tool "$TAILSCALE_BIN" tailscale tailscale.com/cmd/tailscale
  step "tailscale testcontrol $TAILSCALE_VERSION" go_build_tool "$TAILSCALE_CONTROL_BIN" tailscale ./testcontrol
  flock -u 9
  exec 9>&-
  # The base images' inputs (Debian root file system, Node.js, Caddy, ...); `up` builds and pushes them.
  step "base image inputs" "$REPO_ROOT/scripts/base-images.sh" fetch
  # The bootstrap tests' simulated machines: Debian + systemd + sshd, booted by systemd-nspawn.
  step "simulated machines' root file system" bash -c '"$1" >/dev/null' _ "$REPO_ROOT/scripts/sim-rootfs.sh"
  # Node 22 for the dashboard (packages/web): Nuxt 4 needs more than Debian's Node 20.
  step "node 22" bash -c '"$1" >/dev/null' _ "$REPO_ROOT/scripts/node22.sh"
  local IFS=,
  log "install: done in $(elapsed "$t0") (already there: ${CACHED[*]})"
}

# ---------------------------------------------------------------- process helpers
pid_of() { # pid of our daemon NAME if alive, else empty
  local f pid="" args=()
  if [[ $1 == postgres ]]; then f="$STATE/postgres/postmaster.pid"; else f="$PIDS/$1.pid"; fi
  [[ -r "$f" ]] || return 0
  read -r pid 2>/dev/null <"$f" || true
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  # guard against pid reuse: the command line must mention the daemon (no forks: `up` stays fast)
  mapfile -d "" args 2>/dev/null <"/proc/$pid/cmdline" || return 0
  local want=$1; [[ $1 == registry ]] && want=registry-
  [[ "${args[*]}" == *"$want"* ]] && echo "$pid"
  return 0
}

running() { # whether the daemon NAME we just spawned still runs
  # Not pid_of: while the launcher execs the daemon, /proc/PID/cmdline can
  # read empty for a moment, and a daemon that was starting fine would be
  # reported dead. The pid file is ours, written by that launcher.
  local pid=""
  [[ $1 == postgres ]] && { [[ -n "$(pid_of postgres)" ]]; return; }
  read -r pid 2>/dev/null <"$PIDS/$1.pid" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # A daemon that died is our zombie until this script ends.
  local _pid _comm state
  read -r _pid _comm state _ 2>/dev/null <"/proc/$pid/stat" || return 1
  [[ $state != Z ]]
}

port_user() { # describe who listens on 127.0.0.1:PORT (empty if nobody)
  ss -Hltnp "sport = :$1" 2>/dev/null | awk '{ print $4, $6 }' | head -n1
}

sock_user() { # describe who listens on a unix socket path (empty if nobody)
  ss -Hxlp 2>/dev/null | awk -v p="$1" '$5 == p { print $5, $9 }' | head -n1
}

# spawn NAME ENV... -- CMD...: start CMD detached (own session, no tty), pid file + log
spawn() {
  local name=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  : >>"$LOGS/$name.log"
  printf '\n==== %s starting %s\n' "$(date -Is)" "$name" >>"$LOGS/$name.log"
  # the inner shell writes its own pid, then execs the daemon (correct with or without job control)
  rm -f "$PIDS/$name.pid"
  env "${envs[@]}" setsid nohup bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$PIDS/$name.pid" "$@" \
    >>"$LOGS/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  local launcher=$! i
  disown || true
  for ((i = 0; i < 100; i++)); do
    [[ -s "$PIDS/$name.pid" ]] && return 0
    sleep 0.05
  done
  kill -0 "$launcher" 2>/dev/null || fail_start "$name" "could not be launched"
}

# wait_for NAME TIMEOUT: poll health_NAME until it passes; fail naming the daemon + its log
wait_for() {
  local name=$1 timeout=$2 deadline
  deadline=$(( $(date +%s) + timeout ))
  while ! "health_$name"; do
    if [[ $name != postgres ]] && ! running "$name"; then
      fail_start "$name" "process exited"
    fi
    if (( $(date +%s) >= deadline )); then
      fail_start "$name" "not healthy after ${timeout}s"
    fi
    sleep 0.2
  done
}

fail_start() {
  local log_file="$LOGS/$1.log"
  [[ $1 == postgres ]] && log_file="$LOGS/postgres.log"
  {
    printf '[deps] ERROR: %s did not come up (%s). Log: %s\n' "$1" "$2" "$log_file"
    if [[ -r "$log_file" ]]; then echo "---- last lines of $log_file"; tail -n 20 "$log_file"; echo "----"; fi
  } >&2
  exit 1
}

# preflight NAME PORT|SOCK: if it is not ours but the endpoint is taken, say so and fail
preflight_port() {
  local name=$1 port=$2 who
  [[ -n "$(pid_of "$name")" ]] && return 0
  who=$(port_user "$port")
  [[ -z "$who" ]] || die "$name: port $port is already in use by something else ($who) and it is not a healthy $name; stop it or free the port"
}
preflight_sock() {
  local name=$1 sock=$2 who
  [[ -n "$(pid_of "$name")" ]] && return 0
  who=$(sock_user "$sock")
  [[ -z "$who" ]] || die "$name: socket $sock is in use by another process ($who) that is not a healthy $name"
  rm -f "$sock"   # stale socket of a dead daemon
}

# ---------------------------------------------------------------- health checks
s3curl() { curl -fsS --max-time 5 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY_ID:$S3_SECRET_ACCESS_KEY" "$@"; }

health_postgres() {
  local bin; bin=$(pg_bindir)
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 || return 1
  [[ "$(PGPASSWORD=zeitwork PGCONNECT_TIMEOUT=3 "$bin/psql" -X -w -Atq "$DATABASE_URL" -c 'select 1' 2>/dev/null)" == 1 ]]
}
health_minio() {
  curl -fsS --max-time 3 -o /dev/null "$S3_ENDPOINT$MINIO_HEALTH_PATH" 2>/dev/null || return 1
  s3curl -o /dev/null -I "$S3_ENDPOINT/$S3_BUCKET" 2>/dev/null
}
health_registry() {
  [[ "$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR$REGISTRY_HEALTH_PATH" 2>/dev/null)" == 200 ]]
}
health_containerd() {
  [[ -S "$CONTAINERD_SOCK" ]] || return 1
  local out
  out=$(timeout 5 ctr --address "$CONTAINERD_SOCK" version 2>/dev/null) || return 1
  grep -q '^Server:' <<<"$out" && grep -q '^Client:' <<<"$out"
}
health_buildkitd() {
  [[ -S "$BUILDKIT_SOCK" && -x "$BUILDCTL_BIN" ]] || return 1
  local out   # no `| grep -q`: with pipefail an early-exiting grep can fail the check
  out=$(timeout 5 "$BUILDCTL_BIN" --addr "$BUILDKIT_ADDR" debug workers 2>/dev/null) || return 1
  [[ $(wc -l <<<"$out") -ge 2 ]]   # header + at least one worker
}

endpoint() {
  case $1 in
    postgres) echo "$DATABASE_URL" ;;
    minio) echo "$S3_ENDPOINT (console http://$MINIO_CONSOLE_ADDR, bucket $S3_BUCKET)" ;;
    registry) echo "http://$REGISTRY_ADDR" ;;
    containerd) echo "$CONTAINERD_SOCK" ;;
    buildkitd) echo "$BUILDKIT_ADDR" ;;
  esac
}

# ---------------------------------------------------------------- starters
start_postgres() {
  local bin data="$STATE/postgres" logf="$LOGS/postgres.log"
  bin=$(pg_bindir)
  id postgres >/dev/null 2>&1 || die "postgres: system user 'postgres' missing (is the postgresql package installed?)"
  install -d -o postgres -g postgres -m 2775 "$PG_SOCKDIR"
  install -d -o postgres -g postgres -m 700 "$data"
  touch "$logf" && chown postgres:postgres "$logf"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "postgres: initdb ($bin) in $data"
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$logf" 2>&1 || fail_start postgres "initdb failed"
  fi
  local have want
  have=$(cat "$data/PG_VERSION"); want=$(basename "$(dirname "$bin")")
  [[ "$have" == "$want" ]] || die "postgres: cluster in $data is version $have but the newest server is $want; move $data away (dev data) or install postgresql-$have"
  render postgresql.conf.tmpl "$data/zeitwork.conf" || true
  chown postgres:postgres "$data/zeitwork.conf"
  grep -qx "include 'zeitwork.conf'" "$data/postgresql.conf" || echo "include 'zeitwork.conf'" >>"$data/postgresql.conf"

  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1; then
    if [[ -z "$(pid_of postgres)" ]]; then
      preflight_port postgres "$PG_PORT"
      log "postgres: starting"
      setsid runuser -u postgres -- "$bin/pg_ctl" start -D "$data" -l "$logf" -w -t 60 -s \
        </dev/null >>"$logf" 2>&1 8>&- 9>&- || fail_start postgres "pg_ctl start failed"
    fi
    local deadline=$(( $(date +%s) + 60 ))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1; do
      (( $(date +%s) < deadline )) || fail_start postgres "not accepting connections after 60s"
      sleep 0.2
    done
  fi
  # bootstrap role + database over our own socket (idempotent)
  runuser -u postgres -- "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -d postgres >>"$logf" 2>&1 <<'SQL' \
    || fail_start postgres "bootstrap of role/database zeitwork failed (is something else listening on 127.0.0.1:$PG_PORT?)"
SELECT 'CREATE ROLE zeitwork' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'zeitwork') \gexec
ALTER ROLE zeitwork WITH LOGIN SUPERUSER PASSWORD 'zeitwork';
SELECT 'CREATE DATABASE zeitwork OWNER zeitwork' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'zeitwork') \gexec
SQL
  wait_for postgres 30
}

start_minio() {
  install -d -m 700 "$STATE/minio"
  if [[ -z "$(pid_of minio)" ]]; then
    preflight_port minio "$(port_of "$MINIO_ADDR")"
    preflight_port minio "$(port_of "$MINIO_CONSOLE_ADDR")"
    log "minio: starting"
    spawn minio MINIO_ROOT_USER="$S3_ACCESS_KEY_ID" MINIO_ROOT_PASSWORD="$S3_SECRET_ACCESS_KEY" \
      MINIO_UPDATE=off -- \
      "$MINIO_BIN" server "$STATE/minio" --address "$MINIO_ADDR" --console-address "$MINIO_CONSOLE_ADDR"
  fi
  # wait for liveness, then create the bucket (200 or BucketAlreadyOwnedByYou both fine)
  local deadline=$(( $(date +%s) + 90 ))
  until curl -fsS --max-time 3 -o /dev/null "$S3_ENDPOINT$MINIO_HEALTH_PATH" 2>/dev/null; do
    running minio || fail_start minio "process exited"
    (( $(date +%s) < deadline )) || fail_start minio "not live after 90s"
    sleep 0.2
  done
  local out code
  out=$(curl -sS --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY_ID:$S3_SECRET_ACCESS_KEY" \
    -X PUT -w '\n%{http_code}' "$S3_ENDPOINT/$S3_BUCKET" 2>&1) || true
  code=${out##*$'\n'}
  if [[ $code != 200 ]] && ! grep -q BucketAlreadyOwnedByYou <<<"$out"; then
    fail_start minio "creating bucket $S3_BUCKET failed: HTTP $code"
  fi
  wait_for minio 30
}

start_registry() {
  install -d -m 755 "$STATE/registry"
  local cfg="$STATE/registry/config.yml"
  if render registry.yml.tmpl "$cfg" && [[ -n "$(pid_of registry)" ]]; then
    log "registry: config changed, restarting"; stop_pidfile registry
  fi
  chmod 600 "$cfg"
  if [[ -z "$(pid_of registry)" ]]; then
    preflight_port registry "$(port_of "$REGISTRY_ADDR")"
    log "registry: starting"
    spawn registry OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none -- \
      "$REGISTRY_BIN" serve "$cfg"
  fi
  wait_for registry 30
}

start_containerd() {
  install -d -m 711 "$STATE/containerd" "$STATE/containerd/root"
  install -d -m 711 "$RUN/containerd"
  local cfg="$STATE/containerd/config.toml"
  if render containerd.toml.tmpl "$cfg" && [[ -n "$(pid_of containerd)" ]]; then
    log "containerd: config changed, restarting"; stop_pidfile containerd
  fi
  if [[ -z "$(pid_of containerd)" ]]; then
    preflight_sock containerd "$CONTAINERD_SOCK"
    log "containerd: starting"
    spawn containerd -- "$(command -v containerd)" --config "$cfg"
  fi
  wait_for containerd 30
}

# apply_build_net: (re)apply the nftables table that confines RUN steps; on every `up`, so that a
# flushed ruleset is restored. One nft transaction: never a moment without the rules.
apply_build_net() {
  [[ $BUILD_NETWORK == isolated ]] || return 0
  render buildkitd-net.nft.tmpl "$STATE/buildkitd/net.nft" || true
  nft -f "$STATE/buildkitd/net.nft" || die "buildkitd: cannot apply $STATE/buildkitd/net.nft"
}

buildkitd_stale() {
  stale buildkitd.toml.tmpl "$STATE/buildkitd/buildkitd.toml" || stale buildkitd-cni.conflist.tmpl "$STATE/buildkitd/cni.conflist"
}

start_buildkitd() {
  install -d -m 711 "$STATE/buildkitd"
  local cfg="$STATE/buildkitd/buildkitd.toml" changed=0
  render buildkitd.toml.tmpl "$cfg" && changed=1
  render buildkitd-cni.conflist.tmpl "$STATE/buildkitd/cni.conflist" && changed=1
  apply_build_net
  if ((changed)) && [[ -n "$(pid_of buildkitd)" ]]; then
    log "buildkitd: config changed, restarting"; stop_pidfile buildkitd
  fi
  if [[ -z "$(pid_of buildkitd)" ]]; then
    preflight_sock buildkitd "$BUILDKIT_SOCK"
    log "buildkitd: starting"
    spawn buildkitd -- "$BUILDKITD_BIN" --root "$STATE/buildkitd" --addr "$BUILDKIT_ADDR" --config "$cfg"
  fi
  wait_for buildkitd 60
}

# ---------------------------------------------------------------- stop
stop_pidfile() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [[ -z "$pid" ]]; then rm -f "$PIDS/$name.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after 15s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$PIDS/$name.pid"
}

stop_postgres() {
  local data="$STATE/postgres"
  [[ -n "$(pid_of postgres)" ]] || return 0
  runuser -u postgres -- "$(pg_bindir)/pg_ctl" stop -D "$data" -m fast -w -t 60 -s
}

# ---------------------------------------------------------------- commands
setup_dirs() {
  [[ $EUID -eq 0 ]] || die "must run as root (starts postgres as user postgres, containerd, buildkitd)"
  install -d -m 755 "$STATE" "$LOGS" "$PIDS"
  install -d -m 755 "$RUN"
  # postgres must be able to traverse to its data directory
  local d="$STATE"
  while [[ "$d" != / ]]; do
    [[ $(( $(stat -c '%a' "$d") & 1 )) -eq 1 ]] || die "postgres cannot traverse $d (mode $(stat -c '%a' "$d")); choose another ZEITWORK_DEV_STATE"
    d=$(dirname "$d")
  done
}

cmd_up() {
  local t_all; t_all=${EPOCHREALTIME/[.,]/}
  cmd_install
  setup_dirs
  cd /   # runuser -u postgres must not start in a directory it cannot read
  exec 8>"$RUN/.lock"
  flock 8
  local name t0
  for name in "${DAEMONS[@]}"; do
    t0=${EPOCHREALTIME/[.,]/}
    if "health_$name"; then
      # ours, but its config template changed since it started: the starter restarts it
      case $name in
        registry) stale registry.yml.tmpl "$STATE/registry/config.yml" && [[ -n "$(pid_of "$name")" ]] && start_registry ;;
        containerd) stale containerd.toml.tmpl "$STATE/containerd/config.toml" && [[ -n "$(pid_of "$name")" ]] && start_containerd ;;
        buildkitd) apply_build_net; buildkitd_stale && [[ -n "$(pid_of "$name")" ]] && start_buildkitd ;;
      esac || true
      log "$name: healthy, checked in $(elapsed "$t0")"
    else
      "start_$name"
      log "$name: started, healthy after $(elapsed "$t0")"
    fi
  done
  flock -u 8
  # The builder's base images, in the registry just started (a no-op when they are there).
  t0=${EPOCHREALTIME/[.,]/}
  "$REPO_ROOT/scripts/base-images.sh" push
  log "base images: in $BASE_IMAGE_MIRROR, checked in $(elapsed "$t0")"
  echo
  for name in "${DAEMONS[@]}"; do   # all passed their health check above
    printf '%-10s %-9s %-6s %s\n' "$name" healthy "$(pid_of "$name")" "$(endpoint "$name")"
  done
  log "up: all healthy in $(elapsed "$t_all"); logs in $LOGS; eval \"\$($0 env)\" for the endpoints"
}

cmd_down() {
  [[ $EUID -eq 0 ]] || die "must run as root"
  local name
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${DAEMONS[i]}
    if [[ -n "$(pid_of "$name")" ]]; then
      log "$name: stopping"
      if [[ $name == postgres ]]; then stop_postgres; else stop_pidfile "$name"; fi
    else
      log "$name: not running"
      rm -f "$PIDS/$name.pid"
    fi
  done
  rm -f "$BUILDKIT_SOCK"
  log "down: done (data kept in $STATE)"
}

cmd_status() {
  local name bad=0 pid state
  for name in "${DAEMONS[@]}"; do
    pid=$(pid_of "$name")
    if "health_$name"; then state=healthy; else state=unhealthy; bad=1; fi
    printf '%-10s %-9s %-6s %s\n' "$name" "$state" "${pid:--}" "$(endpoint "$name")"
  done
  return $bad
}

cmd_env() {
  cat <<EOF
export DATABASE_URL='$DATABASE_URL'
export S3_ENDPOINT=$S3_ENDPOINT
export S3_REGION=$S3_REGION
export S3_BUCKET=$S3_BUCKET
export S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID
export S3_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY
export REGISTRY_ADDR=$REGISTRY_ADDR
export BASE_IMAGE_MIRROR=$BASE_IMAGE_MIRROR
export BUILDKIT_ADDR=$BUILDKIT_ADDR
export CONTAINERD_ADDR=$CONTAINERD_ADDR
EOF
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 {install|up|down|status|env}" >&2; exit 2 ;;
esac
