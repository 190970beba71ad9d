#!/usr/bin/env bash
# The test bed's own costs: the installer re-run on a prepared machine (warm set-up), then
# starting and stopping a bed with Garage only, one host and three hosts (median/p90 of
# BENCH_ROUNDS rounds, default 5, and ratios against Garage only). Needs root.
# The cold set-up (a fresh machine) is bench/bed_setup_cold.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/bed_start_stop.sh: run as root: the benchmark boots the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
# Warm set-up: everything is installed, so this is what every test run pays up front.
warm=()
for _ in 1 2 3; do
    t0=$EPOCHREALTIME
    tests/bed/install.sh >/dev/null
    t1=$EPOCHREALTIME
    warm+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }')")
done
echo "warm set-up (tests/bed/install.sh on a prepared machine), 3 runs: ${warm[*]} ms"
echo
exec cargo run --locked --quiet --release -p ferry-bench --example bed_start_stop
