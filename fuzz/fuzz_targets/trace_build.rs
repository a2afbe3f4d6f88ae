//! `llmtap::trace::build` on a fuzzer-made `Exchange` (any API, content type,
//! content encoding, status, capture cap, request and response bytes), then
//! the OTLP conversion and both encodings the sinks use: no panic.
//!
//! Input layout (see `fuzz/make_seeds.py`):
//! - byte 0: API (modulo 6, in `APIS` order)
//! - byte 1: bit 0 request present, bit 1 response present, bit 2 response
//!   is `text/event-stream`, bit 3 proxy error, bit 4 deployment name,
//!   bits 5-7 response `Content-Encoding` (index into `ENCODINGS`)
//! - byte 2: status (index into `STATUSES`, modulo)
//! - byte 3: bits 0-2 capture cap (index into `CAPS`), bits 3-4 how the
//!   response ended, bits 5-6 request `Content-Encoding` (index into
//!   `ENCODINGS`), bit 7 provider
//! - bytes 4-5: request body length (little-endian u16, capped at what is left)
//! - then the request body, then the response body.
#![no_main]

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmtap::exchange::{CapturedBody, Exchange, ResponseHead};
use llmtap::route::Api;
use llmtap::tee::{BodyEnd, Capture};
use prost::Message;

const APIS: [Api; 6] = Api::ALL;
const ENCODINGS: [Option<&str>; 8] = [
    None,
    Some("gzip"),
    Some("deflate"),
    Some("br"),
    Some("zstd"),
    Some("identity"),
    Some("gzip, br"),
    Some("x-unknown"),
];
const STATUSES: [u16; 10] = [200, 400, 401, 404, 429, 500, 502, 503, 504, 529];
const CAPS: [usize; 8] = [1 << 20, 0, 1, 16, 64, 256, 1000, 4096];

fn body(bytes: &[u8], cap: usize, ctype: &str, enc: Option<&str>, end: BodyEnd) -> CapturedBody {
    CapturedBody {
        capture: Capture::whole(&Bytes::copy_from_slice(bytes), cap),
        end,
        content_type: Some(ctype.to_string()),
        content_encoding: enc.map(str::to_string),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, rest) = data.split_at(6);
    let api = APIS[usize::from(head[0]) % APIS.len()];
    let flags = head[1];
    let status = STATUSES[usize::from(head[2]) % STATUSES.len()];
    let cap = CAPS[usize::from(head[3] & 7)];
    let end = match (head[3] >> 3) & 3 {
        0 | 3 => BodyEnd::Complete,
        1 => BodyEnd::Error("connection reset".into()),
        _ => BodyEnd::Cancelled,
    };
    let req_enc = ENCODINGS[usize::from((head[3] >> 5) & 3)];
    let provider = if head[3] & 0x80 == 0 {
        "openai"
    } else {
        "anthropic"
    };
    let resp_enc = ENCODINGS[usize::from(flags >> 5)];
    let req_len = usize::from(u16::from_le_bytes([head[4], head[5]])).min(rest.len());
    let (req, resp) = rest.split_at(req_len);

    let ctype = if flags & 4 != 0 {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    let started = Instant::now();
    let response = (flags & 2 != 0).then(|| body(resp, cap, ctype, resp_enc, end));
    let ex = Exchange {
        trace_id: [0x5b; 16],
        span_id: [0x05; 8],
        api,
        provider,
        deployment: (flags & 16 != 0).then(|| "my-deployment".to_string()),
        method: "POST".into(),
        path: "/v1/fuzz".into(),
        started_wall: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        started,
        ended: started + Duration::from_millis(1250),
        request: (flags & 1 != 0)
            .then(|| body(req, cap, "application/json", req_enc, BodyEnd::Complete)),
        response_head: response.as_ref().map(|r| ResponseHead {
            status,
            content_type: r.content_type.clone(),
            content_encoding: r.content_encoding.clone(),
            at: started,
        }),
        response,
        proxy_error: (flags & 8 != 0).then(|| "upstream unreachable".to_string()),
        proxy_status: (flags & 8 != 0).then_some(502),
    };

    let (record, _built) = llmtap::trace::build(&ex, cap);
    let span = llmtap::otlp::to_span(&record);
    let req = llmtap::otlp::request("llmtap-fuzz", vec![span]);
    let _ = req.encode_to_vec();
    let line = llmtap::otlp::to_json_line(&req);
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_ok(),
        "OTLP JSON line is not JSON"
    );
});
