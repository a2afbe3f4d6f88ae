//! `trace::build` on an exchange whose request and response are compressed
//! (bombs among the seeds), then the OTLP JSON line: no panic, and no span
//! attribute longer than a body decoded *within the capture cap* can make
//! (`6 × cap`, the most JSON escaping can grow it, plus 4 KiB): decoding
//! stops at the cap, whatever the input inflates to.
//!
//! Input layout (see `fuzz/make_seeds.py`):
//! - byte 0: API (modulo 6, in `Api::ALL` order)
//! - byte 1: bits 0-2 response `Content-Encoding`, bits 3-5 request
//!   `Content-Encoding` (indexes into `ENCODINGS`), bit 6 the response is
//!   `text/event-stream`
//! - byte 2: capture cap (index into `CAPS`, modulo)
//! - bytes 3-4: request body length (little-endian u16, capped at what is left)
//! - then the request body, then the response body.
#![no_main]

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmtap::exchange::{CapturedBody, Exchange, ResponseHead};
use llmtap::route::Api;
use llmtap::tee::{BodyEnd, Capture};

const ENCODINGS: [Option<&str>; 8] = [
    Some("gzip"),
    Some("deflate"),
    Some("br"),
    Some("zstd"),
    Some("gzip, gzip"),
    Some("gzip, br"),
    None,
    Some("identity"),
];
const CAPS: [usize; 4] = [1 << 20, 1024, 64 * 1024, 16];

fn body(bytes: &[u8], cap: usize, ctype: &str, enc: Option<&str>) -> CapturedBody {
    CapturedBody {
        capture: Capture::whole(&Bytes::copy_from_slice(bytes), cap),
        end: BodyEnd::Complete,
        content_type: Some(ctype.to_string()),
        content_encoding: enc.map(str::to_string),
    }
}

fuzz_target!(|data: &[u8]| {
    let [api, flags, cap, l0, l1, rest @ ..] = data else {
        return;
    };
    let api = Api::ALL[usize::from(*api) % Api::ALL.len()];
    let resp_enc = ENCODINGS[usize::from(flags & 7)];
    let req_enc = ENCODINGS[usize::from((flags >> 3) & 7)];
    let ctype = if flags & 64 != 0 {
        "text/event-stream"
    } else {
        "application/json"
    };
    let cap = CAPS[usize::from(*cap) % CAPS.len()];
    let req_len = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
    let (req, resp) = rest.split_at(req_len);
    let started = Instant::now();
    let response = body(resp, cap, ctype, resp_enc);
    let ex = Exchange {
        trace_id: [0xb0; 16],
        span_id: [0x0b; 8],
        api,
        provider: "openai",
        deployment: None,
        method: "POST".into(),
        path: "/v1/bomb".into(),
        started_wall: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        started,
        ended: started + Duration::from_millis(10),
        request: Some(body(req, cap, "application/json", req_enc)),
        response_head: Some(ResponseHead {
            status: 200,
            content_type: response.content_type.clone(),
            content_encoding: response.content_encoding.clone(),
            at: started,
        }),
        response: Some(response),
        proxy_error: None,
        proxy_status: None,
    };
    let (record, _built) = llmtap::trace::build(&ex, cap);
    let span = llmtap::otlp::to_span(&record);
    let line = llmtap::otlp::to_json_line(&llmtap::otlp::request("llmtap-fuzz", vec![span]));
    let v: serde_json::Value = serde_json::from_str(&line).expect("OTLP JSON line is JSON");
    let bound = 6 * cap + 4096;
    let spans = &v["resourceSpans"][0]["scopeSpans"][0]["spans"];
    for a in spans[0]["attributes"].as_array().into_iter().flatten() {
        let len = a["value"]["stringValue"].as_str().map_or(0, str::len);
        assert!(
            len <= bound,
            "attribute {} is {len} bytes, cap {cap}",
            a["key"]
        );
    }
});
