#!/usr/bin/env bash
# Head-to-head: the same chat calls sent straight to a provider, through an
# nginx reverse proxy, through llmtap (tracing off, tracing on, tracing on
# with fsync = "always") and, with BENCH_LITELLM=1, through LiteLLM's proxy.
# The load comes from wrk, a separate process; the "provider" is a second
# nginx answering the chat fixtures from tests/fixtures/openai_chat (JSON, or
# the SSE stream, sent as one body). Every figure is printed next to its
# ratio against the direct run of the same script, since the machine is
# shared and noisy. One connection shows what each hop adds to a call;
# sixteen, as fast as they go, show throughput on the machine's cores (wrk,
# both nginx and the proxy under test all share them).
#
#   scripts/bench-compare.sh                      # 10 s per run; 1 and 16 connections
#   BENCH_DURATION=30s BENCH_CONNECTIONS="1 64" scripts/bench-compare.sh
#   BENCH_LITELLM=1 scripts/bench-compare.sh      # + LiteLLM (pip install, ~2 min once)
#
# Needs nginx and wrk (Debian packages nginx-light / wrk; installed with
# apt-get when missing and running as root, else it stops and says so),
# cargo, and python3 for BENCH_LITELLM.
set -euo pipefail

DURATION=${BENCH_DURATION:-10s}
CONNS_LIST=${BENCH_CONNECTIONS:-1 16}
THREADS=${BENCH_THREADS:-1}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/llmtap-bench.XXXXXX)
chmod 755 "$work" # nginx's workers (www-data when run as root) read the fixtures
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for conf in "$work"/nginx-*.conf; do
        [ -e "$conf" ] && nginx -c "$conf" -s stop 2>/dev/null || true
    done
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

need() { # command, Debian package
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench-compare: installing $2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
    fi
    command -v "$1" >/dev/null || {
        echo "bench-compare: needs $1 (Debian package $2); install it and run again" >&2
        exit 1
    }
}
need nginx nginx-light
need wrk wrk

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port
    for _ in $(seq 1 600); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.1
    done
    echo "bench-compare: nothing listens on $1" >&2
    exit 1
}

echo "building llmtap (release)..." >&2
(cd "$root" && cargo build --release --quiet)
llmtap="$root/target/release/llmtap"

# The provider: static answers for any method (POST on a static file is a
# 405 that error_page turns into the file itself).
fixtures="$root/tests/fixtures/openai_chat"
mkdir -p "$work/www/json/v1/chat" "$work/www/sse/v1/chat" "$work/logs"
cp "$fixtures/plain.json" "$work/www/json/v1/chat/completions"
cp "$fixtures/stream_include_usage.sse" "$work/www/sse/v1/chat/completions"

provider=$(free_port)
cat >"$work/nginx-provider.conf" <<EOF
worker_processes 1;
pid $work/provider.pid;
error_log $work/logs/provider.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/provider-body;
    server {
        listen 127.0.0.1:$provider;
        root $work/www;
        location /json/ { default_type application/json; error_page 405 =200 \$uri; }
        location /sse/ { default_type text/event-stream; error_page 405 =200 \$uri; }
    }
}
EOF
nginx -c "$work/nginx-provider.conf" -p "$work"

proxy=$(free_port)
cat >"$work/nginx-proxy.conf" <<EOF
worker_processes 1;
pid $work/proxy.pid;
error_log $work/logs/proxy.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/proxy-body;
    proxy_temp_path $work/proxy-temp;
    upstream provider { server 127.0.0.1:$provider; keepalive 256; }
    server {
        listen 127.0.0.1:$proxy;
        location / {
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
nginx -c "$work/nginx-proxy.conf" -p "$work"

# Starts an llmtap; sets $port and $admin. (Not in a subshell: its pid must
# reach the cleanup.)
start_llmtap() { # name, extra env...
    local name=$1
    shift
    port=$(free_port)
    admin=$(free_port)
    env LLMTAP_LISTEN="127.0.0.1:$port" LLMTAP_ADMIN_LISTEN="127.0.0.1:$admin" \
        LLMTAP_UPSTREAM="http://127.0.0.1:$provider" \
        LLMTAP_TRACE_DIR="$work/traces-$name" LLMTAP_SPOOL_DIR="$work/spool-$name" \
        LLMTAP_LOG_FORMAT=json "$@" "$llmtap" >"$work/logs/llmtap-$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
}
start_llmtap off ENABLE_MLFLOW_TRACING=false
off_port=$port
start_llmtap on
on_port=$port on_admin=$admin
start_llmtap always LLMTAP_SPOOL_FSYNC=always
always_port=$port always_admin=$admin

targets=(direct "$provider" nginx "$proxy" "llmtap-off" "$off_port"
    "llmtap-on" "$on_port" "llmtap-always" "$always_port")

if [ "${BENCH_LITELLM:-0}" = 1 ]; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/llmtap/venv-litellm"
    if [ ! -x "$venv/bin/litellm" ]; then
        echo "bench-compare: installing litellm[proxy] into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q 'litellm[proxy]' >&2
    fi
    litellm_port=$(free_port)
    cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$provider/json/v1
      api_key: sk-bench
  - model_name: gpt-4o-mini-sse
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$provider/sse/v1
      api_key: sk-bench
EOF
    # Its defaults otherwise: no master key (it refuses to start without
    # this flag), no database, no callbacks; one worker, as llmtap is one process.
    LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
        "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" \
        --num_workers 1 >"$work/logs/litellm.log" 2>&1 &
    pids+=($!)
    wait_port "$litellm_port"
    targets+=(litellm "$litellm_port")
fi

# wrk's latency lines ("50%  1.23ms") in microseconds.
to_us() {
    awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v+0 }
           else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 }
           else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'
}

run() { # kind, connections, name, port
    local kind=$1 conns=$2 name=$3 port=$4 path model=gpt-4o-mini stream=false out
    path="/$kind/v1/chat/completions"
    if [ "$kind" = sse ]; then stream=true; fi
    if [ "$name" = litellm ]; then
        path=/v1/chat/completions
        if [ "$kind" = sse ]; then model=gpt-4o-mini-sse; fi
    fi
    cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"$model","messages":[{"role":"user","content":"Capital of France?"}],"stream":$stream}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
EOF
    # A short warm-up, then the measured run.
    wrk -t"$THREADS" -c"$conns" -d2s -s "$work/post.lua" "http://127.0.0.1:$port$path" >/dev/null
    out=$(wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency -s "$work/post.lua" \
        "http://127.0.0.1:$port$path")
    local p50 p90 p99 rps errors
    p50=$(echo "$out" | awk '$1=="50%"{print $2}' | to_us)
    p90=$(echo "$out" | awk '$1=="90%"{print $2}' | to_us)
    p99=$(echo "$out" | awk '$1=="99%"{print $2}' | to_us)
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/{printf "%s ", $0}')
    echo "$name $p50 $p90 $p99 $rps ${errors:-}"
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), wrk -t$THREADS -d$DURATION, connections: $CONNS_LIST; $(nproc) cores"
for conns in $CONNS_LIST; do
for kind in json sse; do
    echo
    echo "chat $kind, $conns connection(s): latency in µs; ratio and delta of p50 against direct"
    echo
    echo "| | p50 | p90 | p99 | req/s | p50 ratio | p50 delta | req/s ratio |"
    echo "|---|---|---|---|---|---|---|---|"
    base_p50=
    base_rps=
    for ((i = 0; i < ${#targets[@]}; i += 2)); do
        read -r name p50 p90 p99 rps errors < <(run "$kind" "$conns" "${targets[i]}" "${targets[i + 1]}")
        if [ -z "$base_p50" ]; then base_p50=$p50; base_rps=$rps; fi
        awk -v n="$name" -v a="$p50" -v b="$p90" -v c="$p99" -v r="$rps" -v bp="$base_p50" \
            -v br="$base_rps" -v e="$errors" 'BEGIN {
            printf "| %s | %.0f | %.0f | %.0f | %.0f | %.2fx | %+.0f | %.2fx |%s\n",
                n, a, b, c, r, a / bp, a - bp, r / br, (e == "" ? "" : " " e) }'
    done
done
done

echo
for name in on always; do
    admin_var="${name}_admin"
    metrics=$(python3 - "${!admin_var}" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
keep = ("llmtap_traces_exported_total", "llmtap_traces_dropped_total", "llmtap_journal_hold_timeouts_total")
print("; ".join(l for l in text.splitlines() if l.startswith(keep)))
EOF
)
    echo "llmtap-$name: $metrics"
done
