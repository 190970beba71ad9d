#!/usr/bin/env bash
# Prints the Debian mirror debootstrap should use: $FERRY_TESTBED_MIRROR, else the machine's
# own apt source for Debian (deb822 .sources first, then sources.list), else deb.debian.org.
# Shared by tests/bed/install.sh and bench/bed_setup_cold.sh.
set -euo pipefail
SUITE="${1:-bookworm}"
mirror="${FERRY_TESTBED_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
fi
if [ -z "$mirror" ]; then
    mirror="$(awk '$1 == "deb" && $3 == "'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
fi
printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
