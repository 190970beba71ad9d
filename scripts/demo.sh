#!/usr/bin/env bash
# Ferry's main job, narrated on the real test bed (the same scenario as the end-to-end test):
# `ferry` pushes to a Garage bucket; two systemd hosts run ferry-agent from its timer and
# deploy, update, roll back a broken version on their own, follow manual rollbacks, remove a
# service, and come back after an outage plus reboot; Caddy routes the web service.
# Afterwards the bed stays up to explore until Enter/Ctrl-C; `--cleanup` tears it down at
# once. Installs what the bed needs first (idempotent). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/preflight.sh

require_root scripts/demo.sh "the demo boots systemd-nspawn containers"
require_cargo scripts/demo.sh
show_plan "the demo: push, deploy, update, automatic and manual rollbacks, removal, outage and reboot: about 80 s (the first time also building the test closures with Nix: about 20 s)"

echo
echo "==> Installing the test bed's needs (skipped when present)"
tests/bed/install.sh

echo
echo "==> Building ferry, ferry-agent and the demo"
cargo build --locked -p ferry-pusher -p ferry-agent -p ferry-tests --bins

echo
exec target/debug/ferry-demo "$@"
