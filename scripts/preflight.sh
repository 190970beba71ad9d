# Sourced by scripts/demo.sh and scripts/test.sh: checks what they need from the caller
# (root, cargo on PATH) and tells a new user what the run will do and how long each part
# takes, since the first run installs and builds for 20 minutes or more before the demo or
# the tests start.

# The bed's cache folder, as tests/bed/install.sh uses it.
FERRY_CACHE="${FERRY_TESTBED_CACHE:-/var/cache/ferry-testbed}"

# require_root SCRIPT WHY
require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$1: run as root (sudo $1): $2" >&2
        exit 2
    fi
}

# require_cargo SCRIPT: cargo builds Ferry and garage. sudo resets PATH, so a Rust
# installed with rustup for a normal user is not found from a `sudo` shell.
require_cargo() {
    local cargo_bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
    export PATH="$cargo_bin:$PATH"
    if ! command -v cargo >/dev/null; then
        echo "$1: cargo is not on root's PATH. Install Rust with rustup (https://rustup.rs), or keep" >&2
        echo "  your own PATH through sudo: sudo env \"PATH=\$PATH\" $1" >&2
        exit 2
    fi
}

# show_plan WHAT_LAST: what is still to do on this machine, with the times measured on a
# 2-core machine (README), so the wait is never a silent one.
show_plan() {
    local n=1 first=0
    echo "==> What this run does"
    if ! command -v nix-build >/dev/null || ! command -v systemd-nspawn >/dev/null \
        || ! getent group nixbld >/dev/null; then
        echo "  $n. Debian packages (Nix with its build users, Caddy, systemd-nspawn, ...): about 1 minute"
        n=$((n + 1)) first=1
    fi
    if ! command -v garage >/dev/null; then
        echo "  $n. garage, the S3 store of the test bed: cargo install garage, about 12 minutes on 2 cores"
        n=$((n + 1)) first=1
    fi
    if [ ! -f "$FERRY_CACHE/rootfs/.ferry-rootfs-complete" ]; then
        echo "  $n. the test hosts' Debian root filesystem (debootstrap): about 1 minute"
        n=$((n + 1)) first=1
    fi
    if [ ! -d target/debug ]; then
        echo "  $n. building Ferry's workspace (cargo build): about 7 minutes on 2 cores"
        n=$((n + 1)) first=1
    else
        echo "  $n. building what changed in Ferry's workspace (cargo build)"
        n=$((n + 1))
    fi
    echo "  $n. $1"
    if [ "$first" = 1 ]; then
        echo "  (a first run: later runs reuse everything installed and built)"
    fi
}
