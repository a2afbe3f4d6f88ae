#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ from tests/fixtures/** (run from anywhere).

Each target's input layout is described at the top of its
fuzz_targets/<target>.rs; seeds are fixtures wrapped in that layout. The
zstd seeds need the host `zstd` tool (skipped when it is missing); gzip,
zlib and raw deflate come from Python's standard library, brotli seeds are
built as stored (uncompressed) meta-blocks. The compression bombs (seeds of
`decode_bomb`, `trace_build_bomb` and `decode`) are small on disk and
inflate to 4-80 MiB: gzip and zstd made here one 1 MiB piece at a time
(members and frames concatenate), brotli from tests/fixtures/bombs/.
"""
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
SEEDS = os.path.join(HERE, "seeds")

PARSERS = {
    # fuzz target -> (fixture directory, index of its API in trace_build's APIS)
    "openai_chat": ("openai_chat", 0),
    "openai_responses": ("openai_responses", 1),
    "anthropic": ("anthropic", 2),
    "openai_completions": ("openai_completions", 3),
    "openai_embeddings": ("openai_embeddings", 4),
}

REQUESTS = [
    b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}',
    b'  {"stream": true, "stream_options": null, "model": "m"}',
    b'{"stream":true,"stream_options":{"include_usage":false,"x":1}}',
    b'{"stream":true,"stream_options":{"include_usage":true}}',
    b'{"stream":false,"model":"m","prompt":"say hi","max_tokens":5}',
    b'{"model":"claude","max_tokens":10,"stream":true,"metadata":{"user_id":"u1"},'
    b'"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"t"}]}',
    b'{"model":"text-embedding-3-small","input":["a","b"],"user":"me"}',
    b'{"model":"gpt-4o","input":"hi","stream":true,"temperature":0.5,"top_p":1}',
]

SSE_EXTRA = [
    b"\xef\xbb\xbf: hi\r\nevent: x\rdata: \xe2\x82\xac\r\n\r\ndata: a\ndata: b\r\r\ndata",
    b"data: \xf0\x9f\x98\x80\r\r\r\n\n\r\nid: 1\nevent: e\n\n: c\r",
    b"data: {}\n\ndata: [DONE]\n\n",
    b"event: ping\n\nid: a\x00b\ndata\ndata\n\nretry: 5\n\n",
]


def fixtures(sub=None):
    """(relative name, bytes) of every fixture file, or of one directory."""
    root = os.path.join(FIXTURES, sub) if sub else FIXTURES
    out = []
    if not os.path.isdir(root):
        return out
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, FIXTURES).replace(os.sep, "_")
            with open(p, "rb") as fh:
                out.append((rel, fh.read()))
    return out


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if not name:
        name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def raw_deflate(b):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(b) + c.flush()


def brotli_stored(b):
    """A valid brotli stream: one uncompressed meta-block + an empty last one."""
    b = b[: 1 << 16]
    m = len(b) - 1
    return bytes([(m & 0xF) << 4, (m >> 4) & 0xFF, ((m >> 12) & 0xF) | 0x10]) + b + b"\x03"


def zstd(b):
    if not shutil.which("zstd"):
        return None
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=b, stdout=subprocess.PIPE, check=True).stdout


BOMB_RECORD = b'{"role":"user","content":"hi"},'
BOMB_HEAD = b'{"model":"gpt-4o-mini","messages":['
BOMB_LAST = b'{"role":"user","content":"hi"}]}'
BR_BOMB = os.path.join(FIXTURES, "bombs", "chat_response_80mib.json.br")


def bomb(mib, compress):
    """A chat request of `mib` MiB of messages, compressed 1 MiB at a time."""
    piece = BOMB_RECORD * ((1 << 20) // len(BOMB_RECORD))
    packed = compress(piece)
    if packed is None:
        return None
    return compress(BOMB_HEAD) + packed * mib + compress(BOMB_LAST)


def bombs(mib):
    """(name, Content-Encoding index in decode_bomb's ENCODINGS, body)."""
    gz = lambda b: gzip.compress(b, 9, mtime=0)
    out = [
        ("gzip", 0, bomb(mib, gz)),
        ("zlib", 1, zlib.compress(bomb(mib, lambda b: b) or b"", 9)),
        ("deflate_raw", 1, raw_deflate(bomb(mib, lambda b: b))),
        ("zstd", 3, bomb(mib, zstd)),
        ("gzip_gzip", 4, gz(bomb(mib, gz))),
        ("zstd_gzip", 6, gz(bomb(mib, zstd) or b"")),
        ("gzip_x3", 9, gz(gz(bomb(mib, gz)))),
    ]
    with open(BR_BOMB, "rb") as fh:
        br = fh.read()
    out.append(("br", 2, br))
    out.append(("gzip_br", 5, gz(br)))
    return [(n, e, b) for n, e, b in out if b]


def bomb_seeds():
    """Bombs for decode_bomb (1 MiB limit and 4 KiB), decode, trace_build_bomb."""
    for mib in (16, 80):
        for name, enc, body in bombs(mib):
            if len(body) > 50_000:
                continue  # 80 MiB of gzip/deflate is ~200 KB: 16 MiB will do
            write("decode_bomb", f"{name}_{mib}mib", bytes([enc, 0]) + body)
            write("decode_bomb", f"{name}_{mib}mib_4k", bytes([enc, 3]) + body)
    # decode: byte 0 = limit / 64; a single coding only.
    for name, enc, body in bombs(4):
        if "_" not in name or name == "deflate_raw":
            coding_limit = 255
            write("decode", f"bomb_{name}", bytes([coding_limit]) + body)
    # trace_build_bomb: request and response both bombs, each cap.
    small = [(n, e, b) for n, e, b in bombs(4) if len(b) < 0xFFFF and e < 6]
    for name, enc, body in small:
        for cap in range(4):
            head = bytes([0, enc | (enc << 3), cap]) + struct.pack("<H", len(body))
            write("trace_build_bomb", f"{name}_cap{cap}", head + body + body)
    plain = next(b for n, b in fixtures("openai_chat") if n.endswith("plain.json"))
    req = REQUESTS[0]
    write("trace_build_bomb", "plain_identity", bytes([0, 6 | (6 << 3), 0]) + struct.pack("<H", len(req)) + req + plain)


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    every = fixtures()
    sse_files = [(n, b) for n, b in every if n.endswith(".sse")]

    # sse: byte 0 = cut count, then u16 cuts, then the stream.
    for n, b in sse_files:
        write("sse", n, b"\0" + b)
    for i, b in enumerate(SSE_EXTRA):
        write("sse", f"extra_{i}", b"\0" + b)
        # two cuts, one of them inside a CRLF where there is one
        crlf = b.find(b"\r\n")
        cut = crlf + 1 if crlf >= 0 else len(b) // 2
        write("sse", f"extra_{i}_cut", bytes([2]) + struct.pack("<HH", cut, len(b) // 3) + b)

    # response parsers: the raw fixture bodies, their own first, then all SSE.
    for target, (sub, _) in PARSERS.items():
        for n, b in fixtures(sub):
            write(target, n, b)

    # embeddings: request bodies too (the target also runs request_summary).
    for i, r in enumerate([
        b'{"model":"text-embedding-3-small","input":[1,2,3]}',
        b'{"input":[[1,2],[3,4,5]],"encoding_format":"base64"}',
        b'{"input":["text",[7,8],[]],"dimensions":8}',
        REQUESTS[6],
    ]):
        write("openai_embeddings", f"request_{i}", r)

    # decode: byte 0 = limit / 64, then the body.
    small = [b for n, b in every if n.endswith("stream_basic.sse") or n.endswith("plain.json")]
    for i, b in enumerate(small):
        for limit_byte in (0, 1, 16, 255):
            write("decode", None, bytes([limit_byte]) + gzip.compress(b, mtime=0))
        write("decode", None, bytes([64]) + b)
        write("decode", None, bytes([64]) + gzip.compress(b, mtime=0) + gzip.compress(b[:50], mtime=0))
        write("decode", None, bytes([64]) + zlib.compress(b))
        write("decode", None, bytes([64]) + raw_deflate(b))
        write("decode", None, bytes([64]) + brotli_stored(b))
        write("decode", None, bytes([64]) + brotli_stored(gzip.compress(b, mtime=0)))
        write("decode", None, bytes([64]) + gzip.compress(b, mtime=0)[: len(b) // 4])
        z = zstd(b)
        if z:
            write("decode", None, bytes([64]) + z)
            write("decode", None, bytes([1]) + z)
            write("decode", None, bytes([64]) + z[: len(z) // 2])
    write("decode", "brotli_x_wbits22", bytes([64, 0x0B, 0x00, 0x80, 0x78, 0x03]))

    # inject: u16 split point, then a request body or a response stream.
    for i, r in enumerate(REQUESTS):
        write("inject", f"request_{i}", b"\0\0" + r)
    for n, b in sse_files:
        if "openai_chat" in n or "openai_completions" in n:
            write("inject", n, struct.pack("<H", len(b) // 2) + b)

    # trace_build: 6 header bytes, then request and response bodies.
    for target, (sub, api) in PARSERS.items():
        req = REQUESTS[api % len(REQUESTS)] if api < 3 else REQUESTS[4 + (api - 3) * 2]
        for n, b in fixtures(sub):
            stream = n.endswith(".sse")
            flags = 1 | 2 | (4 if stream else 0)
            status = 1 if n.split("_", 1)[-1].startswith("error") else 0
            head = bytes([api, flags, status, 0x80 if api == 2 else 0]) + struct.pack("<H", len(req))
            write("trace_build", n, head + req + b)
            if "plain.json" in n or "stream_basic" in n or "stream_text" in n:
                # gzip-encoded response (ENCODINGS[1]), a small capture cap,
                # a cut stream, a proxy error, Databricks invocations.
                write("trace_build", n + "_gzip", bytes([api, flags | (1 << 5), 0, 0]) + struct.pack("<H", len(req)) + req + gzip.compress(b, mtime=0))
                write("trace_build", n + "_cap64", bytes([api, flags, 0, 4 | (1 << 3)]) + struct.pack("<H", len(req)) + req + b)
                write("trace_build", n + "_proxyerr", bytes([api, 1 | 8, 6, 0]) + struct.pack("<H", len(req)) + req)
                write("trace_build", n + "_invocations", bytes([5, flags | 16, 0, 0]) + struct.pack("<H", len(req)) + req + b)

    bomb_seeds()

    for t in sorted(os.listdir(SEEDS)):
        print(f"{t}: {len(os.listdir(os.path.join(SEEDS, t)))} seeds")


if __name__ == "__main__":
    main()
