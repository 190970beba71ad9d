#!/usr/bin/env bash
# Runs every test Ferry has, the ones on the real test bed included: installs what the bed
# needs (idempotent; seconds on a prepared machine), then formatting, lints and the tests.
# Needs root: the bed boots systemd-nspawn containers and makes network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/preflight.sh

require_root scripts/test.sh "the test bed boots systemd-nspawn containers"
require_cargo scripts/test.sh
show_plan "formatting, lints and every test, the ones on the real bed included: about 16 minutes on 2 cores"

step() { printf '\n==> %s\n' "$*"; }

step "installing the test bed's needs"
tests/bed/install.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Tests on the bed run the workspace's binaries (ferry, ferry-agent, ferry-testsvc) from
# target/debug, so build them all first.
step "cargo build --bins"
cargo build --workspace --bins --locked

step "cargo test (unit, backend and end-to-end tests on the bed)"
cargo test --workspace --locked --no-fail-fast
