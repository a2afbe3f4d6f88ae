#!/usr/bin/env bash
# Fuzz every target (or the ones named) for SECONDS each, one after another.
#
#   fuzz/run.sh 60                   # every target, 60 s each
#   fuzz/run.sh 300 sse inject       # just these
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly
# flags cargo-fuzz passes (-Zsanitizer=address, -Cpasses=sancov-module, ...).
# Installs cargo-fuzz when it is missing. Seeds committed in fuzz/seeds/<t>/
# are copied into the (git-ignored) run corpus fuzz/corpus/<t>/ first.
# Crashes land in fuzz/artifacts/<t>/; logs in fuzz/artifacts/logs/<t>.log.
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none; when the address build fails,
#                   the script falls back to none by itself.
#   FUZZ_ARGS       extra libFuzzer flags (e.g. "-max_len=65536").
# Exit status: non-zero when any target found a crash or failed to build.
set -uo pipefail

usage() { echo "usage: $0 SECONDS [TARGET...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
secs=$1; shift
[[ $secs =~ ^[0-9]+$ ]] || usage

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root" || exit 1
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz --version '^0.13' || exit 1
fi

sanitizer=${FUZZ_SANITIZER:-address}
echo "== building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer"; then
    if [ "$sanitizer" = none ]; then
        echo "build failed" >&2
        exit 1
    fi
    echo "== the $sanitizer build failed; retrying with --sanitizer none"
    sanitizer=none
    cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer none || exit 1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

mkdir -p "$fuzz_dir/artifacts/logs"
status=0
summary=()
for t in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$t"
    mkdir -p "$corpus"
    if [ -d "$fuzz_dir/seeds/$t" ]; then
        cp -n "$fuzz_dir/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$fuzz_dir/artifacts/logs/$t.log"
    echo "== fuzzing $t for ${secs}s (log: $log)"
    # One fuzzing process per target (the machine has 2 cores and may be
    # busy): no -jobs/-workers, which would only add a supervisor process.
    # shellcheck disable=SC2086
    cargo fuzz run --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -1)
    if [ $rc -ne 0 ]; then
        status=1
        crash=$(grep -oE "(crash|leak|timeout|oom)-[0-9a-f]+" "$log" | tail -1)
        summary+=("$t: FAILED (exit $rc) ${crash:+artifact fuzz/artifacts/$t/$crash} ${cov}")
        tail -40 "$log"
    else
        summary+=("$t: ok — ${done_line:-?}; ${cov:-?}")
    fi
done

echo
echo "== summary (${secs}s per target, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
exit $status
