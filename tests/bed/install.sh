#!/usr/bin/env bash
# Installs everything Ferry's test bed needs on a Debian 12 machine, idempotently:
#   1. Debian packages (apt-get update only when one is missing), and Nix's build users the
#      way Debian packages them (nix-setup-systemd) when the machine's Nix has no set-up,
#   2. Garage (`cargo install garage --locked`) unless a working `garage` is on PATH,
#   3. the container root filesystem for the nspawn hosts, built once with debootstrap into
#      a cache folder outside the checkout and reused while its recipe is unchanged.
# A warm re-run takes seconds. Run as root. Environment knobs:
#   FERRY_TESTBED_CACHE  cache folder (default /var/cache/ferry-testbed)
#   FERRY_TESTBED_MIRROR Debian mirror for debootstrap (default: the machine's apt source)
set -euo pipefail

CACHE="${FERRY_TESTBED_CACHE:-/var/cache/ferry-testbed}"
SUITE=bookworm
# What the hosts need: systemd as PID 1, a system bus, Nix (libdbi-perl or nix-bin fails to
# configure) with its daemon (nix-setup-systemd: nix-daemon.socket, the nixbld group and
# users; the NixOS module's agent unit writes the store only through the daemon), Caddy,
# curl for the admin API, iproute2 to inspect the network.
ROOTFS_PACKAGES="systemd,systemd-sysv,dbus,libdbi-perl,nix-bin,nix-setup-systemd,caddy,curl,ca-certificates,iproute2"
# What the machine itself needs: the bed's tools plus Nix and Caddy for backend tests.
# procps: `kill`, which the bed uses to stop what it started (not in a minimal Debian).
HOST_PACKAGES=(nix-bin caddy systemd-container debootstrap rclone iproute2 zstd util-linux procps curl ca-certificates)
# Bump when the way the root filesystem is made changes, so caches rebuild.
ROOTFS_RECIPE_VERSION=2

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: debootstrap and apt-get need it (sudo tests/bed/install.sh)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this installer supports Debian 12 (bookworm) only"

# --- 1. Debian packages -------------------------------------------------------------------
# Debian's nix-bin alone cannot build: Nix's default `build-users-group = nixbld` names a
# group nothing creates ("the group 'nixbld' ... does not exist"). Debian's own packaging of
# the build users is nix-setup-systemd: group nixbld, users nixbld1..10, /etc/nix/nix.conf
# with `sandbox = false`, and the nix-daemon units (started only where systemd is PID 1).
# It is added only on a machine whose Nix has no set-up at all (no nixbld group, no
# /etc/nix/nix.conf); a machine with its own Nix set-up is left as it is, and checked below.
cargo_bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
# Garage is built from source below when missing; its C parts need a compiler, and
# libsodium's configure script needs make and file (a minimal Debian has neither).
if ! garage --version >/dev/null 2>&1; then
    HOST_PACKAGES+=(gcc make file)
fi
if ! getent group nixbld >/dev/null && [ ! -e /etc/nix/nix.conf ]; then
    say "Nix has no build users here: adding Debian's nix-setup-systemd (group nixbld, users nixbld1-10, /etc/nix/nix.conf)"
    HOST_PACKAGES+=(nix-setup-systemd)
fi
missing=()
for p in "${HOST_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -q || die "apt-get update failed: check the apt sources and network access to the Debian mirror"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]}"
else
    say "Debian packages present: ${HOST_PACKAGES[*]}"
fi
for tool in nix-build nix-store nix systemd-nspawn debootstrap nsenter ip caddy; do
    command -v "$tool" >/dev/null || die "'$tool' is missing after installing packages: install it and re-run"
done

# --- 1b. Nix can build as root ------------------------------------------------------------
# The check is a build like the tests' own (tests/src/closures.nix): a plain derivation whose
# builder is the machine's /bin/sh, no substituters, no sandbox (the tests ask for none).
# Its output is the same store path every time, so a warm re-run builds nothing.
check_drv='derivation { name = "ferry-install-check"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ok > $out" ]; }'
if ! nix_error="$(nix-build --no-out-link --option substituters '' --option sandbox false -E "$check_drv" 2>&1 >/dev/null)"; then
    printf '%s\n' "$nix_error" >&2
    die "Nix cannot build as root on this machine (error above). Fix its set-up (build-users-group in /etc/nix/nix.conf and that group's users), or remove /etc/nix/nix.conf on a machine with no other Nix use so this installer sets Nix up the Debian way"
fi
say "Nix builds as root: $(nix-build --version) ($(getent group nixbld >/dev/null && echo 'build users: nixbld' || echo 'build users: none'))"

# --- 2. Garage ----------------------------------------------------------------------------
if garage_version="$(garage --version 2>/dev/null)"; then
    say "garage present: $garage_version ($(command -v garage))"
else
    command -v cargo >/dev/null || die "garage is not installed and cargo is missing: install Rust (rustup) or put a garage >= 2.3 binary on PATH"
    say "building garage with 'cargo install garage --locked' (about 11 minutes on 2 cores)"
    start=$SECONDS
    cargo install garage --locked --version '^2.5' || die "cargo install garage failed (see the output above)"
    garage --version >/dev/null 2>&1 || die "garage was installed but 'garage --version' does not answer: check $cargo_bin"
    say "garage built in $((SECONDS - start)) s: $(garage --version)"
fi

# --- 3. Container root filesystem ---------------------------------------------------------
mirror="$("$(dirname "$0")/debian_mirror.sh" "$SUITE")"

recipe="suite=$SUITE packages=$ROOTFS_PACKAGES recipe=$ROOTFS_RECIPE_VERSION"
hash="$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"
rootfs="$CACHE/rootfs-$hash"
mkdir -p "$CACHE"

if [ -x "$rootfs/lib/systemd/systemd" ] && [ -f "$rootfs/.ferry-rootfs-complete" ]; then
    say "container root filesystem present: $rootfs"
else
    say "building the container root filesystem with debootstrap from $mirror (about 90 s)"
    say "  packages: $ROOTFS_PACKAGES"
    start=$SECONDS
    tmp="$(mktemp -d "$CACHE/.rootfs-$hash.XXXXXX")"
    # Built beside its final place and renamed at the end, so an interrupted build never
    # leaves a half-made root filesystem where the bed would use it.
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$tmp" "$mirror" \
        >"$tmp.log" 2>&1; then
        tail -n 30 "$tmp.log" >&2
        die "debootstrap failed (full log: $tmp.log): check access to the mirror $mirror"
    fi
    rm -f "$tmp.log"
    # Caddy cannot start without localhost in /etc/hosts.
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$tmp/etc/hosts"
    # Every host gets its machine id from nspawn at boot; an empty file means "not set".
    : >"$tmp/etc/machine-id"
    # apt caches are dead weight in every copy of the root filesystem.
    rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
    # mktemp made the folder 0700; the container's / must be 0755.
    chmod 0755 "$tmp"
    printf '%s\n' "$recipe" >"$tmp/.ferry-rootfs-complete"
    rm -rf --one-file-system "$rootfs"
    mv -T "$tmp" "$rootfs"
    trap - EXIT
    say "container root filesystem built in $((SECONDS - start)) s: $rootfs"
fi

# The bed finds the current root filesystem through this link (replaced atomically).
if [ "$(readlink "$CACHE/rootfs" 2>/dev/null || true)" != "rootfs-$hash" ]; then
    ln -sfn "rootfs-$hash" "$CACHE/rootfs.new"
    mv -T "$CACHE/rootfs.new" "$CACHE/rootfs"
fi
# Drop root filesystems of older recipes: each is about 450 MB.
for old in "$CACHE"/rootfs-*; do
    if [ -d "$old" ] && [ "$old" != "$rootfs" ]; then
        say "removing outdated $old"
        rm -rf --one-file-system "$old"
    fi
done
say "ready: rootfs $CACHE/rootfs -> rootfs-$hash, garage $(command -v garage)"
