#!/usr/bin/env bash
# Cold set-up of the test bed, as on a fresh Debian 12 machine, without disturbing this one:
#   1. the Debian packages tests/bed/install.sh wants, installed with apt into a fresh
#      minimal Debian (debootstrap --variant=minbase; making that Debian is not counted);
#   2. tests/bed/install.sh itself with nothing of the bed present: an empty cache folder
#      (so the container root filesystem is built) and an empty CARGO_HOME with no garage
#      on PATH (so `cargo install garage` downloads and builds it).
# Cold set-up = 1 + 2. Takes about 15 minutes on 2 cores; needs root and network access to
# the Debian mirror and crates.io. Everything it makes is under one scratch folder, removed
# at the end. The warm figures are bench/bed_start_stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/bed_setup_cold.sh: run as root: debootstrap, chroot and the installer need it" >&2
    exit 2
fi
for tool in debootstrap cargo rustc; do
    command -v "$tool" >/dev/null || { echo "bench/bed_setup_cold.sh: '$tool' is missing" >&2; exit 2; }
done

scratch="$(mktemp -d /var/tmp/ferry-setup-cold.XXXXXX)"
cleanup() {
    for m in proc sys dev; do umount -l "$scratch/debian/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$scratch"
}
trap cleanup EXIT
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# The installer's own package list, so this measures exactly what it would install.
eval "$(grep '^HOST_PACKAGES=' tests/bed/install.sh)"
mirror="$(tests/bed/debian_mirror.sh bookworm)"

echo "1. Debian packages on a fresh Debian (${HOST_PACKAGES[*]})"
debootstrap --variant=minbase bookworm "$scratch/debian" "$mirror" >"$scratch/debootstrap.log" 2>&1 \
    || { tail -n 20 "$scratch/debootstrap.log" >&2; exit 1; }
mount -t proc proc "$scratch/debian/proc"
mount --rbind /sys "$scratch/debian/sys"
mount --rbind /dev "$scratch/debian/dev"
t0=$EPOCHREALTIME
chroot "$scratch/debian" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${HOST_PACKAGES[*]}" \
    >"$scratch/apt.log" 2>&1 || { tail -n 20 "$scratch/apt.log" >&2; exit 1; }
apt_ms=$(ms_since "$t0")
echo "   apt-get update + install: $apt_ms ms"

echo "2. tests/bed/install.sh with an empty cache folder and no garage"
# Only cargo and rustc (rustup's proxies) on PATH, and a CARGO_HOME of its own: the
# installer must download and build garage as on a fresh machine.
mkdir -p "$scratch/bin" "$scratch/cargo"
for tool in cargo rustc; do ln -s "$(command -v "$tool")" "$scratch/bin/$tool"; done
export RUSTUP_HOME="${RUSTUP_HOME:-${HOME:-/root}/.rustup}"
t0=$EPOCHREALTIME
env PATH="$scratch/bin:/usr/sbin:/usr/bin:/sbin:/bin" CARGO_HOME="$scratch/cargo" \
    FERRY_TESTBED_CACHE="$scratch/cache" tests/bed/install.sh 2>&1 | tee "$scratch/install.log" | sed 's/^/   /'
install_ms=$(ms_since "$t0")
[ -x "$scratch/cargo/bin/garage" ] || { echo "garage was not built into the scratch CARGO_HOME" >&2; exit 1; }
[ -f "$scratch/cache/rootfs/.ferry-rootfs-complete" ] || { echo "no root filesystem in the scratch cache" >&2; exit 1; }
echo "   installer: $install_ms ms"
echo
echo "cold set-up (1 + 2): $(( (apt_ms + install_ms) / 1000 )) s"
