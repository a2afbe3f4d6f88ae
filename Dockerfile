# llmtap container image.
#
#   docker build -t llmtap .
#   docker run --rm -p 8788:8788 -p 8789:8789 \
#       -e MLFLOW_TRACKING_URI=http://mlflow:5000 llmtap
#
# Works with BuildKit, the legacy Docker builder, Podman and Buildah: no
# `RUN --mount`, no `COPY --chmod`, no `# syntax=` line (which would make
# BuildKit pull a frontend image). Dependencies are compiled in their own
# layer, so a change under src/ only rebuilds the crate itself.
#
# Both base images are build arguments; scripts/build-image-local.sh sets them
# to locally made images. See docs/container.md.

ARG BUILDER_IMAGE=rust:1-bookworm
# glibc, libgcc_s, CA certificates, /etc/passwd with nonroot (65532); no shell.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder

WORKDIR /build

# 1. Dependencies only: a stub crate with the real lock file and the real
#    manifest minus its target tables ([lib], [[bin]], [[bench]], [[test]],
#    [[example]] name files the stub does not have; they do not change how
#    dependencies are built) compiles every dependency. This layer is reused
#    until Cargo.toml or Cargo.lock change. It is only a cache: if the stub
#    cannot build, the full build in step 2 compiles everything and is the
#    one whose errors count.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && awk '/^[[:space:]]*\[/ { skip = ($0 ~ /^[[:space:]]*\[\[?(lib|bin|bench|test|example)\]\]?[[:space:]]*(#.*)?$/) } !skip' \
        Cargo.toml > Cargo.stub.toml \
 && mv Cargo.stub.toml Cargo.toml \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && (cargo build --release --locked \
     || echo "note: dependency pre-build failed; the full build below decides") \
 && rm -rf src Cargo.toml

# 2. The crate. COPY keeps the context's modification times, which can be
#    older than the stub's build outputs, so drop the crate's own fingerprints
#    to force its recompilation (dependencies stay cached).
COPY . .
RUN rm -rf target/release/.fingerprint/llmtap-* \
 && cargo build --release --locked \
 && mkdir -p /out/usr/local/bin \
 && mkdir -p -m 0700 /out/var/lib/llmtap/traces /out/var/lib/llmtap/spool /out/var/lib/llmtap/deadletter \
 && cp target/release/llmtap /out/usr/local/bin/llmtap \
 && /out/usr/local/bin/llmtap --version

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="llmtap" \
      org.opencontainers.image.description="A sidecar proxy that traces LLM traffic into MLflow" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/llmtap /usr/local/bin/llmtap
# llmtap's state, owned by the non-root user and private to it (0700; they
# hold prompts, and llmtap warns about a directory other users can enter): the trace files (used when no
# MLflow tracking server is configured), the disk spool (every trace waits
# there until the sink accepted it) and the dead-letter file. Copying its parent makes `traces` a copied entry,
# so --chown applies to it under every builder.
COPY --from=builder --chown=65532:65532 /out/var/lib/llmtap /var/lib/llmtap

# Inside a container the proxy must be reachable from outside its network
# namespace (another container of the Pod shares it, `docker run -p` does not),
# so listen on all interfaces rather than the binary's 127.0.0.1 default. The
# admin port too: orchestrator probes come from outside. It serves health,
# readiness and metrics only (no secrets, no prompts), within its own
# connection limit and client timeouts; publish it with -p 127.0.0.1:... and
# see docs/security.md, "The admin port", for narrowing it in Kubernetes.
ENV LLMTAP_LISTEN=0.0.0.0:8788 \
    LLMTAP_ADMIN_LISTEN=0.0.0.0:8789 \
    LLMTAP_TRACE_DIR=/var/lib/llmtap/traces \
    LLMTAP_SPOOL_DIR=/var/lib/llmtap/spool \
    LLMTAP_DEAD_LETTER_DIR=/var/lib/llmtap/deadletter

# 8788: the proxy; 8789: admin (/healthz, /readyz, /metrics).
EXPOSE 8788 8789

# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

# SIGTERM (the default stop signal) shuts down gracefully: in-flight calls
# and queued traces get up to 30 s (server.shutdown_grace).
ENTRYPOINT ["/usr/local/bin/llmtap"]
CMD ["serve"]
