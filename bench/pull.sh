#!/usr/bin/env bash
# A host's pull of a 200-path closure (bench/push/closure.nix): the agent's loopback cache
# proxy over Garage + `nix copy`, against the same `nix copy` from a plain HTTP binary cache
# (Caddy's file-server) holding the same objects, at 0 ms and BENCH_RTT_MS (default 50) of
# added round trip (BENCH_ROUNDS rounds, default 3). Installs what the bed needs
# (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/pull.sh: run as root: the benchmark runs on the test bed and deletes store paths" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
cargo build --locked --quiet --release -p ferry-pusher --bin ferry
exec cargo run --locked --quiet --release -p ferry-bench --example pull
