#!/usr/bin/env bash
# The README's two commands as a new user runs them, on a pristine Debian 12 root made on
# this machine, so that nothing this machine once had set up by hand (a group, an /etc file,
# a package, a cached build) can make them pass:
#   1. debootstrap a minimal Debian 12 (bookworm) with only what a developer with Rust has
#      besides it: a C compiler and linker, git; Rust is this machine's rustup toolchains,
#      bound read-only, with an empty cargo home (crates are downloaded as on a new machine).
#      No nixbld group, no /etc/nix, no garage, no bed cache, no build.
#   2. a fresh clone of this checkout's HEAD (committed work only) into that root;
#   3. inside it (its own mount namespace, pivoted into; this machine's kernel and network):
#      `scripts/demo.sh --cleanup`, then `scripts/test.sh` (or with --smoke, only the bed
#      smoke test and the end-to-end test after the demo).
# Prints each step's time and the pass/fail counts of every test binary. Needs root and
# the network (Debian mirror, crates.io). Takes 45-60 minutes on 2 cores (garage's build is
# 12 of them). Everything it makes is under one scratch folder, removed at the end unless
# --keep. Beds inside take slots shared with this machine's (the slot locks are shared), so
# other beds can run meanwhile.
#
# Usage: tests/bed/rehearse_fresh_machine.sh [--smoke] [--keep] [--again SCRATCH]
#   --again SCRATCH  re-runs step 3 in the root a --keep run left in SCRATCH (as it was
#                    left: installed and built), for debugging the rehearsal itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"

smoke=0 keep=0 again=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --keep) keep=1 ;;
        --again) again="${2:?--again needs the scratch folder of a kept run}"; keep=1; shift ;;
        *) echo "usage: $0 [--smoke] [--keep] [--again SCRATCH]" >&2; exit 2 ;;
    esac
    shift
done

say() { printf 'rehearsal: %s\n' "$*"; }
die() { printf 'rehearsal: ERROR: %s\n' "$*" >&2; exit 1; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

[ "$(id -u)" = 0 ] || die "run as root: debootstrap, chroot and the bed need it"
for tool in debootstrap unshare chroot git rustup; do
    command -v "$tool" >/dev/null || die "'$tool' is missing"
done
rustup_home="${RUSTUP_HOME:-${HOME:-/root}/.rustup}"
[ -d "$rustup_home/toolchains" ] || die "no rustup toolchains in $rustup_home"
rustup_bin="$(command -v rustup)"

scratch="${again:-$(mktemp -d /var/tmp/ferry-rehearsal.XXXXXX)}"
root="$scratch/debian"
log="$scratch/rehearsal.log"
finish() {
    local status=$?
    # The mount namespace ended with its last process; refuse to delete through a mount.
    if findmnt -rn -o TARGET | grep -q "^$scratch/"; then
        say "mounts are left under $scratch: not removing it"
    elif [ "$keep" = 1 ]; then
        say "kept: $root (log: $log)"
    else
        cp "$log" "/var/tmp/ferry-rehearsal-$(date +%Y%m%d-%H%M%S).log" 2>/dev/null || true
        rm -rf --one-file-system "$scratch"
    fi
    exit "$status"
}
trap finish EXIT

if [ -z "$again" ]; then
mirror="$(tests/bed/debian_mirror.sh bookworm)"
say "1. a pristine Debian 12 root in $root (from $mirror)"
t0=$EPOCHREALTIME
debootstrap --variant=minbase --include=ca-certificates,git,gcc,libc6-dev bookworm "$root" "$mirror" \
    >"$scratch/debootstrap.log" 2>&1 || { tail -n 20 "$scratch/debootstrap.log" >&2; die "debootstrap failed"; }
# What any installed machine has and a bare debootstrap lacks: name resolution, a hostname
# and localhost in /etc/hosts. debootstrap lists only the main suite: add the updates and
# security suites a Debian 12 installation has.
cp /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's network may reach the mirror and crates.io through a TLS proxy whose CA it
# trusts locally; a machine on that network trusts it too. That is the network's set-up,
# not Ferry's, so it is carried over (and nothing else from /usr/local).
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
fi
echo rehearsal >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 rehearsal\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
EOF
# Rust as rustup installs it: the proxies in ~/.cargo/bin, the toolchains in ~/.rustup
# (this machine's, bound read-only below), nothing else in the cargo home.
mkdir -p "$root/root/.cargo/bin" "$root/root/.rustup"
cp "$rustup_bin" "$root/root/.cargo/bin/rustup"
for proxy in cargo rustc rustdoc cargo-clippy clippy-driver rustfmt cargo-fmt; do
    ln -s rustup "$root/root/.cargo/bin/$proxy"
done
say "   made in $(ms_since "$t0") ms; nixbld: $(chroot "$root" getent group nixbld || echo none), /etc/nix: $([ -e "$root/etc/nix" ] && echo present || echo none)"

say "2. a fresh clone of $(git rev-parse --short HEAD) into /root/ferry"
[ -z "$(git status --porcelain --untracked-files=no)" ] || say "   (uncommitted changes in $repo are not part of the rehearsal)"
git clone --quiet --no-hardlinks "$repo" "$root/root/ferry"

else
    [ -d "$root/root/ferry" ] || die "$again holds no kept rehearsal root"
    say "1-2. reusing the root in $root as a kept run left it"
fi

if [ "$smoke" = 1 ]; then
    tests='cargo test --locked -p ferry-tests --test bed_smoke --test end_to_end'
else
    tests='scripts/test.sh'
fi
say "3. inside the pristine root: scripts/demo.sh --cleanup, then $tests (log: $log)"
# The root gets its own mount namespace: /proc, /sys, /dev, /run and every mount the bed
# makes inside vanish with it. The bed's slot locks are this machine's, so beds inside and
# outside never pick the same bridge and subnet on the shared network stack.
mkdir -p /run/ferry-testbed
inner=$(cat <<EOF
set -e
# The root becomes the root of its own mount namespace (pivot_root, as a container's does),
# not a chroot inside this machine's: the bed relies on what holds on a machine, that / is
# a mount point (\`ip -n\` makes it a slave mount) and that entering a host's mount
# namespace (nsenter) lands on the host's root, which the kernel finds by following the
# mounts stacked on the namespace's root.
mount --bind "$root" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -t tmpfs tmpfs "$root/run"
mkdir -p "$root/run/ferry-testbed"
mount --bind /run/ferry-testbed "$root/run/ferry-testbed"
mount --bind "$rustup_home" "$root/root/.rustup"
mount -o remount,bind,ro "$root/root/.rustup"
mkdir -p "$root/run/rehearsal-old-root"
cd "$root"
pivot_root . run/rehearsal-old-root
umount -l /run/rehearsal-old-root
rmdir /run/rehearsal-old-root
exec /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c 'cd /root/ferry && SECONDS=0 && scripts/demo.sh --cleanup \
        && echo "rehearsal-step: demo passed in \$SECONDS s" && SECONDS=0 \
        && { $tests; status=\$?; echo "rehearsal-step: tests exited \$status in \$SECONDS s"; exit \$status; }'
EOF
)
t0=$EPOCHREALTIME
set +e
unshare --mount --propagation private bash -c "$inner" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
total_s=$(( $(ms_since "$t0") / 1000 ))

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
binaries=$(grep -c 'test result:' "$log" || true)
bad=$(grep -c 'test result: FAILED' "$log" || true)
echo
say "README commands on a pristine Debian 12: exit $status after $total_s s"
grep '^rehearsal-step:' "$log" | sed 's/^rehearsal-step: /  /' || true
say "tests: $passed passed, $failed failed, in $binaries test binaries ($bad not ok)"
exit "$status"
