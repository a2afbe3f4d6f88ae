#!/usr/bin/env bash
# Build the llmtap container image from the repository's Dockerfile on a
# machine that cannot pull from container registries, then smoke-test it.
#
# The Dockerfile's two base images (rust:1-bookworm, distroless/cc-debian12)
# are replaced by locally made ones:
#
#   localhost/llmtap-builder-base   Debian bookworm (debootstrap, minbase) with
#                                   gcc/libc6-dev and a copy of this host's
#                                   Rust toolchain (Debian's rustc is too old
#                                   for the crate and its lock file).
#   localhost/llmtap-runtime-base   a distroless-like root: glibc, libgcc_s,
#                                   the CA bundle, /etc/passwd with nonroot
#                                   (65532); no shell, no package manager.
#
# Debian packages come from the mirror apt already uses here (read from
# /etc/apt/sources.list*). Crates come from crates.io during the build; if the
# build container cannot reach it, VENDOR=1 puts `cargo vendor` output into the
# builder base instead. Not part of CI. Run as root:
#
#   sudo scripts/build-image-local.sh
#
# Environment knobs:
#   IMAGE=localhost/llmtap:local   the image to build
#   WORK=/var/tmp/llmtap-image     scratch space (rootfs trees, logs)
#   REBUILD_BASES=1                remake the base images even if present
#   VENDOR=1                       vendor crates on the host (offline build)
#   DEBIAN_MIRROR=URL              override the mirror found in apt's sources
#   SKIP_SMOKE=1                   build only, no run test
#   HOST_CAS=0                     do not copy /usr/local/share/ca-certificates
#                                  (locally added CAs) into the builder base
#
# Storage is buildah's default (/var/lib/containers/storage) with the vfs
# driver, which needs no overlay or fuse support. Remove everything with
#   buildah --storage-driver vfs rmi --all && rm -rf "$WORK"

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
IMAGE=${IMAGE:-localhost/llmtap:local}
WORK=${WORK:-/var/tmp/llmtap-image}
BUILDER_BASE=localhost/llmtap-builder-base
RUNTIME_BASE=localhost/llmtap-runtime-base
REBUILD_BASES=${REBUILD_BASES:-0}
VENDOR=${VENDOR:-0}
SKIP_SMOKE=${SKIP_SMOKE:-0}
BUILDAH=(buildah --storage-driver vfs)

T0=$SECONDS
log() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and buildah's vfs storage need it)"

# --- tools -----------------------------------------------------------------
need_pkgs=()
command -v buildah >/dev/null || need_pkgs+=(buildah)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ip >/dev/null || need_pkgs+=(iproute2)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}"
fi

# --- the Debian mirror apt uses here ----------------------------------------
# First enabled "deb" source for $SUITE with component main, in deb822
# (*.sources) or one-line (sources.list, *.list) format.
detect_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            function has(list, word) { return (" " list " ") ~ (" " word " ") }
            function flush() {
                if (!found && has(types, "deb") && has(suites, suite) &&
                    has(comps, "main") && enabled != "no" && uri != "") {
                    print uri; found = 1
                }
                types = suites = comps = uri = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                i = index($0, ":"); if (i == 0) next
                key = tolower(substr($0, 1, i - 1)); val = substr($0, i + 1)
                gsub(/^[ \t]+|[ \t]+$/, "", val); gsub(/[ \t]+/, " ", val)
                if (key == "types") types = val
                else if (key == "uris") { split(val, a, " "); uri = a[1] }
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) != suite) next
                for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}

MIRROR=${DEBIAN_MIRROR:-$(detect_mirror)} ||
    die "no 'deb ... $SUITE main' source in /etc/apt/sources.list*; set DEBIAN_MIRROR"
case "$MIRROR" in http://* | https://*) ;; *) die "unsupported mirror URI: $MIRROR" ;; esac
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KEYRING_ARGS=()
[ -f "$KEYRING" ] && KEYRING_ARGS=(--keyring="$KEYRING")

# --- the host's Rust toolchain ----------------------------------------------
SYSROOT=$(cd "$REPO" && rustc --print sysroot) || die "no rustc on this host"
RUSTC_VERSION=$(cd "$REPO" && rustc --version)
MSRV=$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' "$REPO/Cargo.toml" | head -n1)
log "mirror $MIRROR; toolchain $SYSROOT ($RUSTC_VERSION); crate MSRV ${MSRV:-unset}"
if [ ! -x "$SYSROOT/bin/cargo" ] || [ ! -x "$SYSROOT/bin/rustc" ]; then
    die "$SYSROOT lacks bin/cargo or bin/rustc"
fi

mkdir -p "$WORK"

image_exists() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# Turn a directory tree into an image: `buildah from scratch`, copy the tree
# into the container's (vfs) root, apply config, commit.
commit_tree() {
    local tree=$1 name=$2 ctr mnt
    shift 2
    ctr=$("${BUILDAH[@]}" from scratch)
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    cp -a "$tree/." "$mnt/"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" config "$@" "$ctr"
    "${BUILDAH[@]}" commit --rm "$ctr" "$name" >/dev/null
}

# --- builder base -------------------------------------------------------------
BROOT=$WORK/builder-rootfs
make_builder_rootfs() {
    log "debootstrap $SUITE (minbase + gcc, libc6-dev, ca-certificates) into $BROOT"
    rm -rf "$BROOT"
    debootstrap --variant=minbase "${KEYRING_ARGS[@]}" \
        --include=ca-certificates,gcc,libc6-dev,make,pkg-config,libgcc-s1 \
        "$SUITE" "$BROOT" "$MIRROR" >"$WORK/debootstrap-builder.log" 2>&1 ||
        { tail -n 30 "$WORK/debootstrap-builder.log" >&2; die "debootstrap failed (log: $WORK/debootstrap-builder.log)"; }
    # apt inside the image should use the same mirror.
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$BROOT/etc/apt/sources.list"
    rm -rf "$BROOT"/var/cache/apt/archives/*.deb "$BROOT"/var/lib/apt/lists/*

    log "copying the host toolchain ($SYSROOT, without docs) to /usr/local/rust"
    mkdir -p "$BROOT/usr/local/rust" "$BROOT/usr/local/cargo/bin"
    tar -C "$SYSROOT" --exclude=./share/doc -cf - . | tar -C "$BROOT/usr/local/rust" -xf -
    # (No /proc in a bare chroot, so ld.so cannot expand rustc's $ORIGIN
    # RUNPATH here; containers have /proc.)
    chroot "$BROOT" env LD_LIBRARY_PATH=/usr/local/rust/lib /usr/local/rust/bin/rustc --version
    chroot "$BROOT" /usr/local/rust/bin/cargo --version
}

# Trust anchors added locally on this host (/usr/local/share/ca-certificates,
# e.g. a TLS-inspecting egress proxy's CA) go into the builder base too, so that
# cargo inside the build reaches crates.io the way the host does. Only the
# local builder base gets them, never the runtime image. HOST_CAS=0 to skip.
add_host_cas() {
    [ "${HOST_CAS:-1}" = 1 ] || return 0
    local crts=(/usr/local/share/ca-certificates/*.crt)
    [ -f "${crts[0]}" ] || return 0
    log "adding the host's local CA certificates to the builder base: ${crts[*]##*/}"
    mkdir -p "$BROOT/usr/local/share/ca-certificates"
    cp "${crts[@]}" "$BROOT/usr/local/share/ca-certificates/"
    chroot "$BROOT" update-ca-certificates >/dev/null
}

vendor_into_builder_rootfs() {
    log "VENDOR=1: cargo vendor on the host into the builder base"
    rm -rf "$BROOT/usr/local/cargo/vendor"
    mkdir -p "$BROOT/usr/local/cargo"
    (cd "$REPO" && cargo vendor --locked --versioned-dirs "$BROOT/usr/local/cargo/vendor") \
        >"$BROOT/usr/local/cargo/config.toml"
}

if [ "$REBUILD_BASES" = 1 ] || ! image_exists "$BUILDER_BASE" ||
    { [ "$VENDOR" = 1 ] && [ ! -d "$BROOT/usr/local/cargo/vendor" ]; }; then
    if [ "$REBUILD_BASES" = 1 ] || [ ! -x "$BROOT/usr/local/rust/bin/cargo" ]; then
        make_builder_rootfs
    fi
    add_host_cas
    if [ "$VENDOR" = 1 ]; then vendor_into_builder_rootfs; fi
    image_exists "$BUILDER_BASE" && "${BUILDAH[@]}" rmi "$BUILDER_BASE" >/dev/null
    log "committing $BUILDER_BASE"
    # Same layout idea as the official rust image: CARGO_HOME=/usr/local/cargo.
    commit_tree "$BROOT" "$BUILDER_BASE" \
        --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo \
        --workingdir / --cmd /bin/bash
else
    log "$BUILDER_BASE exists (REBUILD_BASES=1 to remake it)"
fi

# --- runtime base (distroless-like) ----------------------------------------------
RROOT=$WORK/runtime-rootfs
make_runtime_rootfs() {
    [ -x "$BROOT/usr/bin/dpkg-query" ] || die "$BROOT is missing; run with REBUILD_BASES=1"
    log "assembling a distroless-like root in $RROOT (libc6, libgcc-s1, CA bundle)"
    rm -rf "$RROOT"
    mkdir -p "$RROOT"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/local/bin,etc/ssl/certs,tmp,root,home/nonroot,var/lib,proc,sys,dev}
    # merged /usr, as in Debian bookworm
    ln -s usr/bin "$RROOT/bin"; ln -s usr/sbin "$RROOT/sbin"
    ln -s usr/lib "$RROOT/lib"; ln -s usr/lib64 "$RROOT/lib64"
    chmod 1777 "$RROOT/tmp"; chmod 0700 "$RROOT/root"
    chown 65532:65532 "$RROOT/home/nonroot"
    local p
    chroot "$BROOT" dpkg-query -L libc6 libgcc-s1 | sort -u | while IFS= read -r p; do
        case "$p" in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/locale/*) continue ;; esac
        # Directories come with their files (and /lib, /lib64 ... exist already).
        if [ -d "$BROOT$p" ]; then continue; fi
        [ -e "$BROOT$p" ] || [ -L "$BROOT$p" ] || continue
        (cd "$BROOT" && cp -a --parents ".$p" "$RROOT/")
    done
    cp "$BROOT/etc/ssl/certs/ca-certificates.crt" "$RROOT/etc/ssl/certs/"
    cp "$BROOT/etc/os-release" "$RROOT/etc/os-release" 2>/dev/null ||
        cp -L "$BROOT/usr/lib/os-release" "$RROOT/etc/os-release"
    cat >"$RROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$RROOT/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
    echo 'hosts: files dns' >"$RROOT/etc/nsswitch.conf"
}

if [ "$REBUILD_BASES" = 1 ] || ! image_exists "$RUNTIME_BASE"; then
    make_runtime_rootfs
    image_exists "$RUNTIME_BASE" && "${BUILDAH[@]}" rmi "$RUNTIME_BASE" >/dev/null
    log "committing $RUNTIME_BASE"
    # What gcr.io/distroless/cc-debian12:nonroot sets.
    commit_tree "$RROOT" "$RUNTIME_BASE" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --user 65532:65532 --workingdir /home/nonroot
else
    log "$RUNTIME_BASE exists (REBUILD_BASES=1 to remake it)"
fi

# --- the image ---------------------------------------------------------------------
log "buildah build of $REPO/Dockerfile -> $IMAGE (log: $WORK/build.log)"
t_build=$SECONDS
if ! "${BUILDAH[@]}" build --isolation chroot \
    --build-arg BUILDER_IMAGE="$BUILDER_BASE" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" \
    --pull-never \
    -f "$REPO/Dockerfile" -t "$IMAGE" "$REPO" 2>&1 | tee "$WORK/build.log"; then
    die "image build failed (log: $WORK/build.log)"
fi
log "image built in $((SECONDS - t_build)) s"
"${BUILDAH[@]}" images "$IMAGE"
"${BUILDAH[@]}" inspect --type image \
    --format 'user={{.OCIv1.Config.User}} entrypoint={{.OCIv1.Config.Entrypoint}} cmd={{.OCIv1.Config.Cmd}} ports={{.OCIv1.Config.ExposedPorts}} env={{.OCIv1.Config.Env}}' \
    "$IMAGE"

[ "$SKIP_SMOKE" = 1 ] && { log "done (SKIP_SMOKE=1)"; exit 0; }

# --- smoke test ---------------------------------------------------------------------
CTR=$("${BUILDAH[@]}" from --pull-never "$IMAGE")
cleanup() { "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "buildah run: llmtap --version / --help"
"${BUILDAH[@]}" run --isolation chroot "$CTR" -- /usr/local/bin/llmtap --version
"${BUILDAH[@]}" run --isolation chroot "$CTR" -- /usr/local/bin/llmtap --help >/dev/null
echo "--help: ok"
echo "runs as: $("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$CTR")"

# Start the image's default command (serve, listening on 0.0.0.0:8788/8789 as
# the image's environment says) inside a fresh network namespace that has only
# loopback, with a fake upstream beside it, so nothing touches the host's
# network. curl (the host's binary, in the same namespace) checks the admin
# routes and sends one chat completion through the proxy; then SIGTERM.
log "serve in a private network namespace: /healthz, /readyz, /metrics, one proxied call, SIGTERM"
SMOKE_LOG=$WORK/smoke.log
export CTR SMOKE_LOG
BUILDAH_CMD="${BUILDAH[*]}"
export BUILDAH_CMD
# shellcheck disable=SC2016  # expanded by the inner bash
unshare --net bash -euo pipefail -c '
    ip link set lo up
    # Fake OpenAI upstream on 127.0.0.1:18080 (the host python, same netns).
    python3 - <<"PY" &
import http.server, json, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-test", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "pong"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 18080), H)
threading.Timer(120, srv.shutdown).start()  # never outlives the test
srv.serve_forever()
PY
    up=$!
    $BUILDAH_CMD run --isolation chroot --env LLMTAP_UPSTREAM=http://127.0.0.1:18080 \
        --env LLMTAP_LOG_FORMAT=json "$CTR" -- /usr/local/bin/llmtap serve >"$SMOKE_LOG" 2>&1 &
    run=$!
    for i in $(seq 1 100); do
        curl -fsS -o /dev/null http://127.0.0.1:8789/healthz 2>/dev/null && break
        sleep 0.2
    done
    echo "healthz: $(curl -fsS http://127.0.0.1:8789/healthz)"
    echo "readyz:  $(curl -fsS http://127.0.0.1:8789/readyz)"
    curl -fsS http://127.0.0.1:8789/metrics | grep -c "^llmtap_" | sed "s/^/metrics: llmtap_ samples: /"
    echo "proxied: $(curl -fsS http://127.0.0.1:8788/v1/chat/completions \
        -H "content-type: application/json" -H "authorization: Bearer sk-test" \
        -d "{\"model\":\"gpt-test\",\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}]}")"
    sleep 2  # let the exporter write the trace (batch_interval 1s)
    # SIGTERM to llmtap itself: a descendant of our own `buildah run`.
    find_llmtap() {
        local c
        for c in $(ps -o pid= --ppid "$1"); do
            if [ "$(cat /proc/$c/comm 2>/dev/null)" = llmtap ]; then echo "$c"; return; fi
            find_llmtap "$c"
        done
    }
    pid=$(find_llmtap "$run" | head -n1)
    [ -n "$pid" ] || { echo "cannot find the llmtap process"; cat "$SMOKE_LOG"; exit 1; }
    t=$(date +%s%N); kill -TERM "$pid"
    rc=0; wait "$run" || rc=$?
    echo "after SIGTERM: exit status $rc, $(( ($(date +%s%N) - t) / 1000000 )) ms"
    kill "$up" 2>/dev/null || true
    [ "$rc" -eq 0 ] || { cat "$SMOKE_LOG"; exit 1; }
'
echo "--- llmtap log ---"
cat "$SMOKE_LOG"
MNT=$("${BUILDAH[@]}" mount "$CTR")
echo "--- trace dir in the container ---"
ls -ln "$MNT/var/lib/llmtap" "$MNT/var/lib/llmtap/traces"
n=$(cat "$MNT"/var/lib/llmtap/traces/* 2>/dev/null | grep -c '"resourceSpans"' || true)
"${BUILDAH[@]}" umount "$CTR" >/dev/null
[ "${n:-0}" -ge 1 ] || die "no trace was written to /var/lib/llmtap/traces"
echo "trace lines written: $n"

log "all checks passed; image $IMAGE"
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"
