#!/usr/bin/env bash
# Ferry's main job, narrated on the real test bed: publish signed manifests to a Garage
# bucket, watch ferry-agent inside a booted systemd host deploy, update and roll back.
# Installs what the bed needs first (idempotent). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh: run as root (sudo scripts/demo.sh): the demo boots a systemd-nspawn container" >&2
    exit 2
fi

echo "==> Installing the test bed's needs (skipped when present)"
tests/bed/install.sh

echo "==> Building ferry, ferry-agent and the demo"
cargo build --locked --quiet -p ferry-pusher -p ferry-agent -p ferry-tests --bins

exec target/debug/ferry-demo "$@"
