#!/usr/bin/env bash
# A no-op tick of the release-built ferry-agent inside a bed host against Garage:
# requests, wall and CPU time, peak RSS (median/p90 of BENCH_ROUNDS ticks, default 30) and
# their ratio to issue 4's goal (one request, under 50 ms, under 30 MiB).
# Installs what the bed needs (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/agent_noop_tick.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
cargo build --locked --quiet --release -p ferry-agent --bin ferry-agent -p ferry-tests --bin ferry-testsvc
exec cargo run --locked --quiet --release -p ferry-bench --example agent_noop_tick
