//! `llmtap::inject`:
//! - `add_include_usage`: when it rewrites a body that was JSON, the result
//!   is JSON with `stream_options.include_usage == true` and every other
//!   top-level member unchanged.
//! - `UsageFilter`: output bytes do not depend on chunking (two chunks at a
//!   fuzzer-chosen point, and byte-at-a-time for small inputs, against the
//!   whole input pushed at once), and a stream without `"usage"` passes
//!   through untouched.
//!
//! Input layout: bytes 0-1 (little-endian u16, modulo len+1) pick the split
//! point for the filter; the rest is the body / stream. A seed made from a
//! plain file is `\0\0` + the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::inject::{add_include_usage, UsageFilter};
use serde_json::Value;

fn filter(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut f = UsageFilter::default();
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&f.push(c));
    }
    out.extend_from_slice(&f.finish());
    (out, f.removed)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (head, body) = data.split_at(2);
    let split = usize::from(u16::from_le_bytes([head[0], head[1]])) % (body.len() + 1);

    // Request side.
    if let Some(out) = add_include_usage(body) {
        if let Ok(before) = serde_json::from_slice::<Value>(body) {
            let after: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "rewritten body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&out)
                )
            });
            assert_eq!(
                after.pointer("/stream_options/include_usage"),
                Some(&Value::Bool(true)),
                "rewritten body: {after}"
            );
            let (Value::Object(mut b), Value::Object(mut a)) = (before, after) else {
                panic!("a rewritten body must be an object");
            };
            b.remove("stream_options");
            a.remove("stream_options");
            assert_eq!(a, b, "members other than stream_options changed");
        }
    }

    // Response side.
    let whole = filter(&[body]);
    let (a, b) = body.split_at(split);
    assert_eq!(
        filter(&[a, b]),
        whole,
        "split at {split} changed the output"
    );
    if body.len() <= 512 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(filter(&bytes), whole, "byte-at-a-time changed the output");
    }
    if !body.windows(7).any(|w| w == b"\"usage\"") {
        assert_eq!(whole.0, body, "a stream without \"usage\" was altered");
        assert_eq!(whole.1, 0);
    }
});
