#!/usr/bin/env bash
# Full push of a 200-path synthetic closure (bench/push/closure.nix) to Garage with the
# release-built ferry vs nix copy to file:// + rclone copy, in the same run, and the
# incremental push with one path changed, at 0 ms and at BENCH_RTT_MS (default 50) of added
# round trip through a latency relay (BENCH_ROUNDS rounds, default 3).
# Installs what the bed needs (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/push.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
cargo build --locked --quiet --release -p ferry-pusher --bin ferry
exec cargo run --locked --quiet --release -p ferry-bench --example push
