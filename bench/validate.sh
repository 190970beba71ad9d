#!/usr/bin/env bash
# Validating a 1,000-service manifest (schema layer + semantic checks) against issue 2's
# goal of 20 ms, and against parsing the same bytes with serde_json alone, measured in the
# same criterion run. Prints the medians and both ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked --quiet -p ferry-bench --bench validate -- --warm-up-time 2 --measurement-time 5 >/dev/null
dir=target/criterion/validate
median_ms() {
    # criterion stores estimates in nanoseconds.
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6)' "$dir/$1/new/estimates.json"
}
parse=$(median_ms "parse only (serde_json)")
validate=$(median_ms "validate_bytes_1000 services")
awk -v p="$parse" -v v="$validate" 'BEGIN {
    printf "1,000 services, criterion medians\n"
    printf "  parse only (serde_json):      %7.2f ms\n", p
    printf "  validate_bytes (both layers): %7.2f ms\n", v
    printf "  validate / parse only:        %7.2fx\n", v / p
    printf "  validate / goal (20 ms):      %7.2f\n", v / 20
}'
