#!/usr/bin/env bash
# The root file system of the simulated machines that the bootstrap tests boot with
# systemd-nspawn (internal/bootstrap/simmachine): Debian bookworm with systemd as init and
# OpenSSH's server, debootstrapped from the Debian archive this machine's apt uses.
#
#   scripts/sim-rootfs.sh          make it and the packages cache unless cached; print its directory
#   scripts/sim-rootfs.sh path     print the directory it is (or would be) cached in
#   scripts/sim-rootfs.sh debs     make the packages cache unless made; print its directory
#   scripts/sim-rootfs.sh debs-path  print the directory the packages are (or would be) cached in
#
# The packages cache is a flat apt repository (Packages, Release) of the .debs bootstrap installs
# on these machines (DEBS below, internal/bootstrap/distro.go's Debian lists) with their
# dependencies, downloaded once against the image: the bootstrap tests serve it to the machines,
# which then need no Debian archive and no internet.
#
# Cached outside the clone, in $ZEITWORK_CACHE/simmachine/<recipe hash>, a directory (not a tar)
# because every machine is an overlay on top of it: booting one copies nothing. Each machine gets
# its own host keys, machine id, hostname and authorized key from the harness; the image has none.
# Needs root, debootstrap and systemd-container (installed with apt when missing).
set -euo pipefail

SUITE=bookworm
# What a freshly installed server has beyond minbase: systemd as init, sshd, and netbase
# (/etc/protocols: nft resolves "icmp" there, and the node agent's rules name it).
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,netbase,iproute2,iputils-ping,ca-certificates,curl,procps,less

# bootstrap's apt packages on Debian, every role (internal/bootstrap/distro.go; a test holds the
# two together).
DEBS="ca-certificates curl containerd runc nftables iproute2 netbase isal containernetworking-plugins"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$(realpath -m "${ZEITWORK_CACHE:-${HOME:-/root}/.cache/zeitwork}")"
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[sim-rootfs] %s\n' "$*" >&2; }
die() { printf '[sim-rootfs] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local d=$(( ${EPOCHREALTIME/[.,]/} - $1 )); printf '%d.%01ds' $((d / 1000000)) $((d % 1000000 / 100000)); }

# The recipe: what goes in and this script's own customise step; a change makes a new directory.
HASH=$( { echo "$SUITE $INCLUDE"; sed -n '/^customise()/,/^}/p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
DIR="$CACHE/simmachine/debian-$SUITE-systemd-$HASH"
DEBS_DIR="$DIR-debs-$(echo "$DEBS" | sha256sum | cut -c1-8)"

debian_mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
    | grep -v security | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

# customise ROOT: what makes a debootstrapped tree a machine the harness can boot and reach.
customise() {
  local root=$1
  # Per machine, written by the harness before boot: none in the image, so no two machines share one.
  rm -f "$root"/etc/ssh/ssh_host_* "$root/etc/hostname"
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*
  # Keys only; the harness's user is root, as on a freshly provisioned server.
  mkdir -p "$root/etc/ssh/sshd_config.d"
  cat >"$root/etc/ssh/sshd_config.d/zeitwork-sim.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF
  mkdir -p "$root/root/.ssh"; chmod 700 "$root/root/.ssh"
  # sshd by socket would also work; a plain service is what a server has.
  chroot "$root" systemctl enable ssh.service >/dev/null 2>&1 || true
  # Nothing to do in a container, and each one's failure would make the system "degraded".
  local u
  for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer getty@tty1.service console-getty.service systemd-networkd-wait-online.service; do
    chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
  done
  # The network is configured from outside (the harness's netns and veth): nothing to bring up.
  echo 'nameserver 127.0.0.1' >"$root/etc/resolv.conf"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -f "$root/etc/apt/sources.list"
}

make_rootfs() {
  [[ -f "$DIR/.done" ]] && return
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  mkdir -p "$CACHE/simmachine"
  exec 7>"$CACHE/simmachine/.lock"
  flock 7
  [[ -f "$DIR/.done" ]] && return
  local t0 tmp mirror; t0=${EPOCHREALTIME/[.,]/}; mirror=$(debian_mirror)
  tmp="$DIR.tmp.$$"
  rm -rf "$tmp"
  log "debootstrap --variant=minbase $SUITE (+ $INCLUDE) from $mirror ..."
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" >"$CACHE/simmachine/debootstrap.log" 2>&1 \
    || { rm -rf "$tmp"; die "debootstrap failed, see $CACHE/simmachine/debootstrap.log"; }
  customise "$tmp"
  # The certificate authorities this machine adds (a TLS-inspecting egress proxy's): machines reach
  # what the host reaches.
  local f
  for f in /usr/local/share/ca-certificates/*.crt; do [[ -f $f ]] && cp "$f" "$tmp/usr/local/share/ca-certificates/"; done
  chroot "$tmp" update-ca-certificates >/dev/null 2>&1 || true
  touch "$tmp/.done"
  rm -rf "$DIR"; mv "$tmp" "$DIR"
  # Older recipes are of no use any more.
  find "$CACHE/simmachine" -mindepth 1 -maxdepth 1 -type d -name "debian-$SUITE-systemd-*" ! -path "$DIR" -exec rm -rf {} +
  log "root file system in $DIR ($(du -sh "$DIR" | cut -f1)) in $(elapsed "$t0")"
}

# make_debs: apt in a throwaway overlay on the image downloads DEBS and what they need beyond it.
make_debs() {
  [[ -f "$DEBS_DIR/.done" ]] && return
  make_rootfs
  exec 7>"$CACHE/simmachine/.lock"
  flock 7
  [[ -f "$DEBS_DIR/.done" ]] && return
  local t0 work; t0=${EPOCHREALTIME/[.,]/}
  work=$(mktemp -d "$CACHE/simmachine/.debs.XXXXXX")
  mkdir -p "$work/upper" "$work/work" "$work/root"
  mount -t overlay overlay -o "lowerdir=$DIR,upperdir=$work/upper,workdir=$work/work" "$work/root"
  # shellcheck disable=SC2064
  trap "umount -l '$work/root' 2>/dev/null; rm -rf '$work'" EXIT
  cp /etc/resolv.conf "$work/root/etc/resolv.conf"
  local mirror; mirror=$(debian_mirror)
  sed -i "s|^URIs: .*|URIs: $mirror|" "$work/root/etc/apt/sources.list.d/debian.sources"
  log "apt: downloading $DEBS from $mirror ..."
  # shellcheck disable=SC2086
  chroot "$work/root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only --no-install-recommends $DEBS" \
    >"$CACHE/simmachine/debs.log" 2>&1 || die "apt failed, see $CACHE/simmachine/debs.log"
  local tmp="$DEBS_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  cp "$work/root"/var/cache/apt/archives/*.deb "$tmp/"
  (cd "$tmp" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)
  # A flat repository's Release: apt checks Packages against it (the source is marked trusted).
  { echo "Date: $(LC_ALL=C date -Ru)"; echo "SHA256:"
    echo " $(sha256sum <"$tmp/Packages" | cut -d' ' -f1) $(stat -c %s "$tmp/Packages") Packages"; } >"$tmp/Release"
  touch "$tmp/.done"
  rm -rf "$DEBS_DIR"; mv "$tmp" "$DEBS_DIR"
  find "$CACHE/simmachine" -mindepth 1 -maxdepth 1 -type d -name "debian-$SUITE-systemd-*-debs-*" ! -path "$DEBS_DIR" -exec rm -rf {} +
  log "packages in $DEBS_DIR ($(ls "$DEBS_DIR"/*.deb | wc -l) .debs, $(du -sh "$DEBS_DIR" | cut -f1)) in $(elapsed "$t0")"
}

case "${1:-make}" in
  make) make_rootfs; make_debs; echo "$DIR" ;;
  path) echo "$DIR" ;;
  debs) make_debs; echo "$DEBS_DIR" ;;
  debs-path) echo "$DEBS_DIR" ;;
  debs-list) echo "$DEBS" ;;
  *) echo "usage: $0 [make|path|debs|debs-path|debs-list]" >&2; exit 2 ;;
esac
