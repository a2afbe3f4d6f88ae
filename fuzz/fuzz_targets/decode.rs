//! `decode_body` under every supported coding (and a list, and unknown ones)
//! with a small output limit: no panic, output never longer than the limit,
//! and the identity coding returns the (capped) input itself.
//!
//! Input layout: byte 0 picks the limit (`b * 64`, so 0..=16320 bytes), the
//! rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::parse::decode::decode_body;

const ENCODINGS: &[Option<&str>] = &[
    Some("gzip"),
    Some("x-gzip"),
    Some("deflate"),
    Some("br"),
    Some("zstd"),
    Some("gzip, br"),
    Some("deflate,zstd"),
    Some("br, br"),
    Some("compress"),
    Some("gzip, unknown"),
    Some(""),
    Some("identity"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let limit = usize::from(head) * 64;
    for &enc in ENCODINGS {
        if let Ok((out, cut)) = decode_body(enc, body, limit) {
            assert!(
                out.len() <= limit,
                "{enc:?}: {} bytes out, limit {limit}",
                out.len()
            );
            // One layer cut at the limit fills it (with a list, an inner
            // layer's cut may leave the outer layer's output shorter).
            if cut && !enc.unwrap_or("").contains(',') {
                assert_eq!(out.len(), limit, "{enc:?}: cut short of the limit");
            }
            if matches!(enc, None | Some("") | Some("identity")) {
                assert_eq!(out, &body[..body.len().min(limit)]);
                assert_eq!(cut, body.len() > limit);
            }
        }
    }
});
