#!/usr/bin/env bash
# bench/push_wait.sh [strategies|waves|fleet]: `ferry push --wait` wall time (launch to return)
# with bed hosts running the release-built ferry-agent from the NixOS module's timer
# (every 5 s) and reporting to a status store.
# strategies (default): against the new version first answering through both hosts'
# Caddy, restart and blue-green, two hosts: median/p90/max of BENCH_ROUNDS pushes per
# strategy (default 5), and the no-op ticks' bucket requests with status reporting on
# (must be 1).
# waves: three hosts, BENCH_ROUNDS pushes each (default 5) without a rollout and with
# waves [[host-a], [host-b, host-c]] and soakSec 5, taking turns; each host's first
# answer, the ratio of the medians, and the ticks that read reports (host-b/c, 1 each).
# fleet: BENCH_HOSTS hosts (default 10) on one bucket, `restart`, BENCH_ROUNDS pushes
# (default 3) at 0 ms and at BENCH_RTT_MS (default 50) of added round trip (a relay in front
# of Garage for the hosts and `ferry`): launch → push wrote the manifest, → all hosts serve
# it, → --wait returns; the hosts' bucket requests per minute while quiet
# (BENCH_QUIET_SEC, default 120; status.everySec 60) and per push, by kind as Garage saw
# them, against the tick lines and the formula in PLAN.md ("Fleet scale").
# Installs what the bed needs (idempotent), builds release, prints a table. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/push_wait.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
cargo build --locked --quiet --release -p ferry-agent --bin ferry-agent -p ferry-tests --bin ferry-testsvc -p ferry-pusher --bin ferry
exec cargo run --locked --quiet --release -p ferry-bench --example push_wait -- "$@"
