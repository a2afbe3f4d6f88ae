#!/usr/bin/env bash
# The benchmark: one command that measures what llmtap adds to a call, next
# to nginx and to a direct connection, and prints one markdown table.
#
#   scripts/bench.sh                 # full run (~30 min with the 10-minute soak)
#   BENCH_QUICK=1 scripts/bench.sh   # smoke run of every phase (a few minutes)
#
# Targets, measured in turn (round-robin per measurement): direct (the
# provider simulator `llmtap-sim serve`), nginx (plain reverse proxy), llmtap
# with tracing off, llmtap tracing to files, llmtap tracing to a real
# `mlflow server` (sqlite store in the work dir). Phases and figures: see
# docs/benchmarks.md ("The benchmark command"); scripts/bench.py runs them.
#
# Knobs (env): BENCH_DURATION (seconds per measurement, default 10),
# BENCH_REPEATS (default 3), BENCH_SOAK_SECS (default 600), BENCH_QUICK=1,
# BENCH_WORK (work dir; default a new /tmp/llmtap-bench-<time>),
# BENCH_STREAMS (concurrent streams, default 100), BENCH_HOLDS (default
# "1000 5000"), BENCH_SOAK_RATE (default 60), BENCH_BURST_CALLS (default
# 3000), BENCH_DRAIN_SECS (default 120), BENCH_SIM_THREADS (default 1),
# BENCH_CONNECTIONS (oha connections, default 64), BENCH_SKIP_BUILD=1.
#
# Installs what it lacks: nginx (Debian nginx-light, with apt-get, as root),
# a pinned oha (cargo install into ~/.cache/llmtap/tools) and, if no MLflow
# venv of the tests exists, a venv with the tests' pinned mlflow.
set -euo pipefail

OHA_VERSION=1.16.0
MLFLOW_VERSION=3.17.2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/llmtap
tools=$cache/tools

say() { echo "bench: $*" >&2; }

need_nginx() {
    command -v nginx >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing nginx-light (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null; }
    fi
    command -v nginx >/dev/null || { say "needs nginx (Debian package nginx-light)"; exit 1; }
}

need_oha() {
    oha=$tools/bin/oha
    if [ -x "$oha" ] && "$oha" --version 2>/dev/null | grep -q " $OHA_VERSION"; then return; fi
    say "installing oha $OHA_VERSION into $tools (cargo install, a few minutes once)"
    CARGO_INCREMENTAL=0 cargo install oha --locked --version "$OHA_VERSION" --root "$tools" >&2
}

need_mlflow() {
    local marker=.llmtap-venv-complete dir
    for dir in "$cache"/venv-mlflow-"$MLFLOW_VERSION"-*; do
        if [ -e "$dir/$marker" ] && [ -x "$dir/bin/python" ]; then
            mlflow_python=$dir/bin/python
            return
        fi
    done
    dir=$cache/venv-mlflow-$MLFLOW_VERSION-bench
    say "creating $dir with mlflow==$MLFLOW_VERSION (pip, a few minutes once)"
    rm -rf "$dir.tmp"
    python3 -m venv "$dir.tmp"
    "$dir.tmp/bin/pip" install -q "mlflow==$MLFLOW_VERSION" >&2
    touch "$dir.tmp/$marker"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    # Console scripts carry the temp path in their shebang; bench.py runs
    # `python -m mlflow`, which does not use them.
    mlflow_python=$dir/bin/python
}

need_nginx
need_oha
need_mlflow
command -v python3 >/dev/null || { say "needs python3"; exit 1; }

# 5,000 open streams through a proxy hold ~10,000 sockets in it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
    say "warning: open-file limit $(ulimit -n); the 5,000-stream phase may fail"
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building llmtap and llmtap-sim (release)"
    (cd "$root" && CARGO_INCREMENTAL=0 cargo build --release --quiet --bin llmtap --bin llmtap-sim)
fi

work=${BENCH_WORK:-/tmp/llmtap-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$work"
chmod 755 "$work"

export BENCH_ROOT=$root BENCH_WORK_DIR=$work BENCH_OHA=$oha BENCH_MLFLOW_PYTHON=$mlflow_python
export BENCH_LLMTAP=$target_dir/release/llmtap BENCH_SIM=$target_dir/release/llmtap-sim
exec python3 "$root/scripts/bench.py"
