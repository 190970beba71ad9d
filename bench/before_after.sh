#!/usr/bin/env bash
# Before/after: the planner benchmark (`plan`, 1,000 services) and the no-op tick of two
# revisions, built with one and the same release profile into one target folder, measured
# in one run, reported as after ÷ before. Usage: bench/before_after.sh BEFORE [AFTER]
# (AFTER defaults to HEAD). Issue 15's check: bench/before_after.sh 2d8d95d b350718.
#
# The planner is measured twice: in time (criterion) and in instructions (callgrind, via
# bench/examples/plan_calls.rs, copied with bench/shared/plan_fixture.rs into each
# revision's tree so both run the very same calls): instruction counts do not move with the
# machine's load, so they settle a small difference that timings on a busy machine cannot.
#
# The profile: Cargo's stock release profile (no LTO, 16 codegen units) for both sides, so
# the comparison is of the code and the builds take minutes, not the shipping profile's
# fat LTO; BENCH_SHIPPING_PROFILE=1 uses the workspace's own [profile.release] instead.
# The plan benchmark runs each side's criterion binary BENCH_PLAN_ROUNDS times (default 3),
# the two taking turns, and takes the median of criterion's estimates; the no-op tick runs
# both agents on one bed host in turns (bench/examples/agent_noop_tick.rs, BENCH_ROUNDS).
# Needs root (the bed) and the bed installed (tests/bed/install.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: bench/before_after.sh BEFORE [AFTER]   (revisions, e.g. 2d8d95d b350718)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench/before_after.sh: run as root: the no-op tick runs on the test bed" >&2
    exit 2
fi
before=$(git rev-parse --short "$1^{commit}")
after=$(git rev-parse --short "${2:-HEAD}^{commit}")
work=target/before-after
mkdir -p "$work"
work=$(cd "$work" && pwd)
export CARGO_TARGET_DIR="$work/target"
if [ "${BENCH_SHIPPING_PROFILE:-0}" != 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_STRIP=none
fi
tests/bed/install.sh >/dev/null

# Each revision's sources in a detached worktree, removed again on exit.
trees=()
cleanup() { for t in "${trees[@]}"; do git worktree remove --force "$t" 2>/dev/null || true; done; }
trap cleanup EXIT

# build REV: the agent and the plan benchmark of REV, copied out as $work/<what>-REV.
build() {
    local rev=$1 src="$work/src-$1"
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree add --quiet --detach "$src" "$rev"
    trees+=("$src")
    echo "before_after: building $rev (agent and plan benchmark, release)..." >&2
    (cd "$src" && cargo build --locked --quiet --release -p ferry-agent --bin ferry-agent)
    cp "$CARGO_TARGET_DIR/release/ferry-agent" "$work/ferry-agent-$rev"
    local exe
    exe=$(cd "$src" && cargo bench --locked --quiet -p ferry-bench --bench plan --no-run \
        --message-format=json | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -n "$exe" ] || { echo "before_after: no plan benchmark built for $rev" >&2; exit 1; }
    cp "$exe" "$work/plan-$rev"
    mkdir -p "$src/bench/shared"
    cp bench/shared/plan_fixture.rs "$src/bench/shared/"
    cp bench/examples/plan_calls.rs "$src/bench/examples/"
    (cd "$src" && cargo build --locked --quiet --release -p ferry-bench --example plan_calls)
    cp "$CARGO_TARGET_DIR/release/examples/plan_calls" "$work/plan_calls-$rev"
}

# Instructions of N calls of a case minus those of none: the calls alone.
instructions() { # REV CASE N
    local n total0 totaln
    for n in 0 "$3"; do
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/plan_calls-$1" "$n" "$2" \
            2>"$work/callgrind.err" || { cat "$work/callgrind.err" >&2; exit 1; }
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/callgrind.err" >"$work/callgrind.$n"
    done
    total0=$(cat "$work/callgrind.0")
    totaln=$(cat "$work/callgrind.$3")
    awk -v a="$total0" -v b="$totaln" -v n="$3" 'BEGIN { printf "%.0f", (b - a) / n }'
}
build "$before"
build "$after"

# One run of a plan benchmark binary: "<benchmark name>\t<point estimate, ns>" per line,
# from criterion's own estimates (a folder of its own per side and round).
plan_run() {
    local rev=$1 round=$2 home="$work/criterion-$1-$2"
    rm -rf "$home"
    CRITERION_HOME="$home" "$work/plan-$rev" --bench --noplot >/dev/null 2>&1
    find "$home" -path '*/new/estimates.json' | while read -r f; do
        name=$(sed -n 's/.*"title":"\([^"]*\)".*/\1/p' "$(dirname "$f")/benchmark.json")
        est=$(sed -n 's/.*"median":{"confidence_interval":{[^}]*},"point_estimate":\([0-9.e+-]*\).*/\1/p' "$f")
        printf '%s\t%s\n' "$name" "$est"
    done
}
rounds=${BENCH_PLAN_ROUNDS:-3}
: >"$work/plan.tsv"
for ((r = 1; r <= rounds; r++)); do
    # Taking turns at going first, so drift in the machine's load falls on both sides.
    if ((r % 2)); then order=("$before" "$after"); else order=("$after" "$before"); fi
    for rev in "${order[@]}"; do
        echo "before_after: plan benchmark of $rev, round $r of $rounds..." >&2
        plan_run "$rev" "$r" | sed "s/^/$rev\t/" >>"$work/plan.tsv"
    done
done
echo
echo "plan benchmark (criterion median estimates, median of $rounds rounds each; same profile)"
printf '%-36s %12s %12s %15s\n' benchmark "before µs" "after µs" "after ÷ before"
awk -F'\t' -v b="$before" -v a="$after" '
    { v[$1 FS $2] = v[$1 FS $2] " " $3; names[$2] = 1 }
    function median(s,   n, x, i, j, t) {
        n = split(s, x, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
        return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    END { for (n in names) { mb = median(v[b FS n]); ma = median(v[a FS n]);
        printf "%-36s %12.1f %12.1f %15.3f\n", n, mb / 1000, ma / 1000, ma / mb } }' "$work/plan.tsv" | sort

echo
echo "plan, instructions per call (callgrind; the same calls, set-up not counted)"
printf '%-36s %14s %14s %15s\n' benchmark "before" "after" "after ÷ before"
for case in no-change one-changed; do
    b=$(instructions "$before" "$case" 5)
    a=$(instructions "$after" "$case" 5)
    printf '%-36s %14s %14s %15s\n' "plan/1000 services, ${case/-/ }" "$b" "$a" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
done

echo
echo "no-op tick ($after against baseline $before, one bed host, taking turns)"
# Built in AFTER's tree (with this checkout's example), so the bed writes the agent.toml
# AFTER's tests write; both agents read that one file, so both revisions must accept it.
cp bench/examples/agent_noop_tick.rs "$work/src-$after/bench/examples/"
cd "$work/src-$after"
cargo build --locked --quiet --release -p ferry-tests --bin ferry-testsvc
FERRY_AGENT_BIN="$work/ferry-agent-$after" FERRY_AGENT_BASELINE_BIN="$work/ferry-agent-$before" \
    cargo run --locked --quiet --release -p ferry-bench --example agent_noop_tick
