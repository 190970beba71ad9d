#!/usr/bin/env bash
# The wave gate at scale (issue 17): 200 simulated agents (tokio tasks running the agent's
# gate step and status store client) reading the reports of earlier waves from the bed's
# Garage (no nspawn host), waves [[canary-*] (2), [web-*] (20), [*] (178)], through a
# LatencyRelay at 0 and 50 ms RTT and a relay that counts the requests and the answers'
# status codes: requests per tick per host against the formula in PLAN.md ("Waves"), and
# the gate's wall time (median, p95), for first reads (200) and unchanged reports (304).
# BENCH_ROUNDS rounds (default 3). Installs what the bed needs (idempotent), builds
# release, prints tables. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/wave_gate_scale.sh: run as root: the benchmark runs on the test bed" >&2
    exit 2
fi
tests/bed/install.sh >/dev/null
exec cargo run --locked --quiet --release -p ferry-bench --example wave_gate_scale
