#!/usr/bin/env bash
# Restarting one changed service in a bed host: the agent's zbus backend (Reload +
# RestartUnit) vs systemctl daemon-reload + systemctl restart processes, side by side in one
# run (median/p90 of BENCH_ROUNDS rounds, default 20) and their ratio.
# Installs what the bed needs (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/restart_zbus_vs_systemctl.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
exec cargo run --locked --quiet --release -p ferry-bench --example restart_zbus_vs_systemctl
