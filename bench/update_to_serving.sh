#!/usr/bin/env bash
# A one-service update from tick start to the new version serving through Caddy, restart
# against blue-green, with the release-built ferry-agent inside a bed host (Garage, the
# host's Caddy): medians of BENCH_ROUNDS updates per strategy (default 5), split into the
# tick's pull, systemd, health, route and drain phases, and the ratio blue-green ÷ restart.
# Installs what the bed needs (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/update_to_serving.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
cargo build --locked --quiet --release -p ferry-agent --bin ferry-agent -p ferry-tests --bin ferry-testsvc
exec cargo run --locked --quiet --release -p ferry-bench --example update_to_serving
