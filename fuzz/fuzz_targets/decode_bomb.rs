//! `decode_body` fed compression bombs at the limits llmtap really uses:
//! every coding (and nested lists such as `gzip, gzip`) with an output limit
//! of up to 1 MiB, the default-sized capture cap of the hostile-client suite.
//! No panic, and the output is never longer than the limit, however far the
//! input would inflate (the seeds inflate to 4–80 MiB; libFuzzer's
//! `-rss_limit_mb` in `fuzz/run.sh` catches a decoder that buffers them).
//!
//! Input layout (see `fuzz/make_seeds.py`): byte 0 picks the encoding
//! (modulo `ENCODINGS.len()`), byte 1 the limit (modulo `LIMITS.len()`), the
//! rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::parse::decode::decode_body;

const ENCODINGS: [&str; 10] = [
    "gzip",
    "deflate",
    "br",
    "zstd",
    "gzip, gzip",
    "gzip, br",
    "zstd, gzip",
    "deflate, deflate",
    "br, zstd",
    "gzip, gzip, gzip",
];
const LIMITS: [usize; 5] = [1 << 20, 0, 1, 4096, 65536];

fuzz_target!(|data: &[u8]| {
    let [enc, limit, body @ ..] = data else {
        return;
    };
    let enc = ENCODINGS[usize::from(*enc) % ENCODINGS.len()];
    let limit = LIMITS[usize::from(*limit) % LIMITS.len()];
    if let Ok((out, cut)) = decode_body(Some(enc), body, limit) {
        assert!(
            out.len() <= limit,
            "{enc}: {} bytes out, limit {limit}",
            out.len()
        );
        if cut && !enc.contains(',') {
            assert_eq!(out.len(), limit, "{enc}: cut short of the limit");
        }
    }
});
