#!/usr/bin/env bash
# Size of the shipped binaries (`ferry`, `ferry-agent`) built with the workspace's release
# profile (strip, fat LTO, one codegen unit; Cargo.toml) against Cargo's stock release
# profile (no strip, no LTO, 16 codegen units) built in the same run, into its own target
# folder so neither build reuses the other. Prints sizes, ratios and build times.
# Needs no root and no test bed; takes two full release builds (10-20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

stock_dir=target/bench-stock-release
bins=(ferry ferry-agent)
build() { # TARGET_DIR, then env overrides
    local dir=$1
    shift
    local t0=$EPOCHREALTIME
    env "$@" cargo build --locked --quiet --release --target-dir "$dir" \
        -p ferry-pusher --bin ferry -p ferry-agent --bin ferry-agent
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'
}

echo "binary_size: building with Cargo's stock release profile (baseline)..." >&2
stock_s=$(build "$stock_dir" CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16)
echo "binary_size: building with the workspace's release profile..." >&2
ours_s=$(build target)

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
printf '%-12s %14s %14s %8s\n' binary "stock (MiB)" "ferry (MiB)" ratio
for b in "${bins[@]}"; do
    stock=$(stat -c %s "$stock_dir/release/$b")
    ours=$(stat -c %s "target/release/$b")
    printf '%-12s %14s %14s %7.2fx\n' "$b" "$(mib "$stock")" "$(mib "$ours")" \
        "$(awk -v a="$stock" -v b="$ours" 'BEGIN { print a / b }')"
done
printf 'build wall time: stock %s s, ferry %s s (both cold unless cached)\n' "$stock_s" "$ours_s"
