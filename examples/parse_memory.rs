//! Peak memory of a parse worker on hostile bodies: each shape is built into
//! an exchange, written as a journal record and read back, then parsed into
//! its span and encoded, in a child process of its own. The peak resident
//! set of that parse (VmHWM, reset just before it) is what is reported.
//!
//! `cargo run --release --example parse_memory [cap_MiB]` (default 10).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use llmtap::exchange::{CapturedBody, Exchange, ResponseHead};
use llmtap::pipeline::journal::codec;
use llmtap::route::Api;
use llmtap::tee::{BodyEnd, Capture};
use prost::Message;

const SHAPES: &[&str] = &[
    "chat_text",
    "chat_stream",
    "zeros",
    "tiny_objects",
    "tiny_strings",
    "nested",
    "sse_tiny_events",
    "sse_distinct_choices",
    "sse_logprobs",
    "gzip_bomb",
    "invalid_utf8",
];

/// `body` repeated until it is about `len` bytes, between `open` and `close`.
fn fill(open: &str, item: &str, close: &str, len: usize) -> Vec<u8> {
    let mut out = open.as_bytes().to_vec();
    while out.len() + item.len() + close.len() < len {
        out.extend_from_slice(item.as_bytes());
    }
    if out.ends_with(b",") {
        out.pop();
    }
    out.extend_from_slice(close.as_bytes());
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).and_then(|()| e.finish()).expect("gzip")
}

/// (request, response, response content type, content encoding) of a shape.
fn shape(name: &str, cap: usize) -> (Vec<u8>, Vec<u8>, &'static str, Option<&'static str>) {
    let req = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let json = "application/json";
    let sse = "text/event-stream";
    let chunk = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"word "},"logprobs":null,"finish_reason":null}]}

"#;
    match name {
        "chat_text" => {
            let text = "lorem ipsum ".repeat(cap / 12 - 40);
            let body = format!(
                r#"{{"id":"x","object":"chat.completion","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}]}}"#
            );
            (req, body.into_bytes(), json, None)
        }
        "chat_stream" => (req, fill("", chunk, "data: [DONE]\n\n", cap), sse, None),
        "zeros" => {
            let z = fill("[", "0,", "]", cap);
            (z.clone(), z, json, None)
        }
        "tiny_objects" => {
            let z = fill("[", "{\"a\":0},", "]", cap);
            (z.clone(), z, json, None)
        }
        "tiny_strings" => {
            let z = fill("[", "\"\",", "]", cap);
            (z.clone(), z, json, None)
        }
        "nested" => {
            let z = fill("", "{\"a\":", "", cap);
            (z.clone(), z, json, None)
        }
        "sse_tiny_events" => (req, fill("", "data: {}\n\n", "", cap), sse, None),
        "sse_distinct_choices" => {
            let mut out = Vec::new();
            let mut i = 0u64;
            while out.len() + 64 < cap {
                out.extend_from_slice(
                    format!("data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"x\"}}}}]}}\n\n").as_bytes(),
                );
                i += 1;
            }
            (req, out, sse, None)
        }
        "sse_logprobs" => {
            let ev = r#"data: {"choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.1,"bytes":[120],"top_logprobs":[]}]}}]}

"#;
            (req, fill("", ev, "", cap), sse, None)
        }
        "gzip_bomb" => {
            let mut inflated = b"{\"model\":\"m\",\"input\":\"".to_vec();
            inflated.resize(80 << 20, b'a');
            let gz = gzip(&inflated);
            (gz.clone(), gz, json, Some("gzip"))
        }
        "invalid_utf8" => {
            let junk = vec![0xFF; cap];
            (junk.clone(), junk, json, None)
        }
        other => panic!("unknown shape {other}"),
    }
}

fn body(data: Vec<u8>, ctype: &str, enc: Option<&str>, cap: usize) -> CapturedBody {
    CapturedBody {
        capture: Capture::whole(&Bytes::from(data), cap),
        end: BodyEnd::Complete,
        content_type: Some(ctype.into()),
        content_encoding: enc.map(str::to_string),
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The journal record of a shape's exchange.
fn record(name: &str, cap: usize) -> (usize, Vec<u8>) {
    let (req, resp, ctype, enc) = shape(name, cap);
    let wire = req.len() + resp.len();
    let started = Instant::now();
    let ex = Exchange {
        trace_id: [1; 16],
        span_id: [2; 8],
        api: Api::ChatCompletions,
        provider: "openai",
        deployment: None,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        started_wall: SystemTime::now(),
        started,
        ended: started + Duration::from_millis(10),
        request: Some(body(req, "application/json", enc, cap)),
        response_head: Some(ResponseHead {
            status: 200,
            content_type: Some(ctype.into()),
            content_encoding: enc.map(str::to_string),
            at: started,
            request_id: None,
        }),
        response: Some(body(resp, ctype, enc, cap)),
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    };
    (wire, codec::encode(&ex, usize::MAX))
}

/// Child: parses one record the way a parse worker does; prints
/// "<peak KiB above the record> <ms> <bodies unparsed>".
fn child(path: &str, cap: usize) {
    let record = std::fs::read(path).expect("record");
    let before = status_kib("VmRSS:");
    // Resets VmHWM to the current RSS (Linux >= 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let t = Instant::now();
    let ex = codec::decode(&record).expect("decode");
    let (span, _) = llmtap::trace::build(&ex, cap);
    let unparsed = ["llmtap.request.unparsed", "llmtap.response.unparsed"]
        .iter()
        .filter(|k| span.get(k).is_some())
        .count();
    let encoded = llmtap::otlp::to_span(&span).encode_to_vec();
    let ms = t.elapsed().as_millis();
    let peak = status_kib("VmHWM:");
    drop((ex, span, encoded));
    println!("{} {ms} {unparsed}", peak.saturating_sub(before));
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let Ok(path) = std::env::var("PARSE_MEMORY_RECORD") {
        let cap = std::env::var("PARSE_MEMORY_CAP")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(10 << 20);
        return child(&path, cap);
    }
    let cap_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let cap = cap_mib << 20;
    let exe = std::env::current_exe().expect("exe");
    println!(
        "capture cap {cap_mib} MiB, parse budget {} MiB",
        llmtap::parse::budget::parse_budget(cap) >> 20
    );
    println!(
        "{:<22} {:>12} {:>14} {:>8} {:>9}",
        "shape", "wire bytes", "peak MiB", "ms", "unparsed"
    );
    let dir = std::env::temp_dir().join(format!("llmtap-parse-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("record");
    for name in SHAPES {
        let (wire, record) = record(name, cap);
        std::fs::write(&path, record).expect("write record");
        let out = Command::new(&exe)
            .env("PARSE_MEMORY_RECORD", &path)
            .env("PARSE_MEMORY_CAP", cap.to_string())
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        match f.as_slice() {
            [kib, ms, unparsed] => {
                let mib = kib.parse::<f64>().unwrap_or(0.0) / 1024.0;
                println!("{name:<22} {wire:>12} {mib:>14.1} {ms:>8} {unparsed:>9}");
            }
            _ => println!(
                "{name:<22} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
