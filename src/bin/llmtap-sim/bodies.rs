//! Response bodies as OpenAI and Anthropic send them (shapes copied from
//! tests/fixtures/openai_chat and tests/fixtures/anthropic). The answer's
//! text is rendered once per size and shared; per call only the envelope
//! (id, created, model, usage) is written, and per chunk one small buffer.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

/// What the text is made of: plain ASCII, nothing to escape in JSON.
const PHRASE: &[u8] = b"The quick brown fox jumps over the lazy dog. ";
const FINGERPRINT: &str = "fp_5im0d124f1";

/// The facts of one call that its body repeats.
#[derive(Debug, Clone)]
pub struct Call {
    /// The model as a JSON string literal (quoted, escaped).
    pub model_json: String,
    /// Call number: makes the ids unique.
    pub seq: u64,
    /// Unix seconds.
    pub created: u64,
    pub prompt_tokens: u64,
    /// Completion tokens = content chunks.
    pub chunks: u64,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
}

impl Call {
    pub fn request_id(&self) -> String {
        format!("req_5im{:021x}", self.seq)
    }
}

/// The answer's text: `len` bytes of [`PHRASE`], repeated.
pub fn text(len: usize) -> Bytes {
    PHRASE.iter().copied().cycle().take(len).collect()
}

/// The text length for a call: at least one byte per chunk.
pub fn text_len(body_bytes: u64, chunks: u64) -> usize {
    body_bytes.max(chunks) as usize
}

/// Text shared by the calls of the default size; others get their own.
#[derive(Debug, Clone)]
pub struct Texts {
    default: Bytes,
}

impl Texts {
    pub fn new(default_len: usize) -> Texts {
        Texts {
            default: text(default_len),
        }
    }

    pub fn get(&self, len: usize) -> Bytes {
        if len == self.default.len() {
            self.default.clone()
        } else {
            text(len)
        }
    }
}

/// `chat.completion`.
pub fn openai_plain(call: &Call, text: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(text.len() + 900);
    let _ = write!(
        v,
        r#"{{"id":"chatcmpl-5im{:026x}","object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":""#,
        call.seq, call.created, call.model_json
    );
    v.extend_from_slice(text);
    v.extend_from_slice(
        br#"","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":"#,
    );
    openai_usage(&mut v, call);
    let _ = write!(
        v,
        r#","service_tier":"default","system_fingerprint":"{FINGERPRINT}"}}"#
    );
    Bytes::from(v)
}

fn openai_usage(v: &mut Vec<u8>, call: &Call) {
    let _ = write!(
        v,
        r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
        call.prompt_tokens,
        call.chunks,
        call.prompt_tokens + call.chunks
    );
}

/// Anthropic `message`.
pub fn anthropic_plain(call: &Call, text: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(text.len() + 600);
    let _ = write!(
        v,
        r#"{{"model":{},"id":"msg_01{}","type":"message","role":"assistant","content":[{{"type":"text","text":""#,
        call.model_json,
        message_id(call.seq)
    );
    v.extend_from_slice(text);
    v.extend_from_slice(br#""}],"stop_reason":"end_turn","stop_sequence":null,"usage":"#);
    anthropic_usage(&mut v, call.prompt_tokens, call.chunks);
    v.push(b'}');
    Bytes::from(v)
}

fn message_id(seq: u64) -> String {
    format!("5im{seq:019x}")
}

fn anthropic_usage(v: &mut Vec<u8>, input: u64, output: u64) {
    let _ = write!(
        v,
        r#"{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}},"output_tokens":{output},"service_tier":"standard"}}"#
    );
}

/// A stream, pre-rendered but for its content chunks: the frames before the
/// first chunk (`head`), how to render content chunk i, the frames after
/// the last (`tail`).
#[derive(Debug)]
pub struct StreamPlan {
    pub head: Vec<Bytes>,
    content_prefix: Bytes,
    content_suffix: &'static [u8],
    text: Bytes,
    pub chunks: u64,
    pub tail: Vec<Bytes>,
}

impl StreamPlan {
    /// Content chunk `i` (0-based) as one SSE event: its share of the text.
    pub fn content(&self, i: u64) -> Bytes {
        let len = self.text.len() as u64;
        let (from, to) = (i * len / self.chunks, (i + 1) * len / self.chunks);
        let piece = &self.text[from as usize..to as usize];
        let size = self.content_prefix.len() + piece.len() + self.content_suffix.len();
        let mut b = BytesMut::with_capacity(size);
        b.put_slice(&self.content_prefix);
        b.put_slice(piece);
        b.put_slice(self.content_suffix);
        b.freeze()
    }
}

/// `chat.completion.chunk` events: role, content..., finish, usage (when
/// asked for), `[DONE]`.
pub fn openai_stream(call: &Call, text: Bytes) -> StreamPlan {
    let usage_null = if call.include_usage {
        r#","usage":null"#
    } else {
        ""
    };
    let envelope = format!(
        r#"data: {{"id":"chatcmpl-5im{:026x}","object":"chat.completion.chunk","created":{},"model":{},"service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":["#,
        call.seq, call.created, call.model_json
    );
    let role = format!(
        r#"{envelope}{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
    );
    let finish = format!(
        r#"{envelope}{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]{usage_null}}}"#
    );
    let mut tail = vec![event(finish.into_bytes())];
    if call.include_usage {
        let mut usage = format!("{envelope}],\"usage\":").into_bytes();
        openai_usage(&mut usage, call);
        usage.push(b'}');
        tail.push(event(usage));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let content_suffix: &'static [u8] = if call.include_usage {
        br#""},"logprobs":null,"finish_reason":null}],"usage":null}

"#
    } else {
        br#""},"logprobs":null,"finish_reason":null}]}

"#
    };
    StreamPlan {
        head: vec![event(role.into_bytes())],
        content_prefix: Bytes::from(format!(r#"{envelope}{{"index":0,"delta":{{"content":""#)),
        content_suffix,
        text,
        chunks: call.chunks,
        tail,
    }
}

/// Anthropic events: message_start, content_block_start, ping,
/// content_block_delta..., content_block_stop, message_delta, message_stop.
pub fn anthropic_stream(call: &Call, text: Bytes) -> StreamPlan {
    let mut start = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"model\":{},\"id\":\"msg_01{}\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":",
        call.model_json,
        message_id(call.seq)
    )
    .into_bytes();
    anthropic_usage(&mut start, call.prompt_tokens, 1);
    start.extend_from_slice(b"}}");
    let mut delta = br#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":"#
        .to_vec();
    let _ = write!(
        delta,
        r#"{{"input_tokens":{},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{}}}}}"#,
        call.prompt_tokens, call.chunks
    );
    StreamPlan {
        head: vec![
            event(start),
            Bytes::from_static(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"),
            Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
        ],
        content_prefix: Bytes::from_static(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\""),
        content_suffix: b"\"}}\n\n",
        text,
        chunks: call.chunks,
        tail: vec![
            Bytes::from_static(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"),
            event(delta),
            Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ],
    }
}

/// An SSE event from its lines (`data: ...` or `event: ...\ndata: ...`).
fn event(mut v: Vec<u8>) -> Bytes {
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn call(include_usage: bool) -> Call {
        Call {
            model_json: "\"gpt-\\\"x\"".into(),
            seq: 7,
            created: 1_700_000_000,
            prompt_tokens: 11,
            chunks: 3,
            include_usage,
        }
    }

    fn data_events(frames: &[Bytes]) -> Vec<Value> {
        let all: Vec<u8> = frames.concat();
        String::from_utf8(all)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    fn frames(plan: &StreamPlan) -> Vec<Bytes> {
        let mut out = plan.head.clone();
        out.extend((0..plan.chunks).map(|i| plan.content(i)));
        out.extend(plan.tail.iter().cloned());
        out
    }

    #[test]
    fn plain_bodies_are_json_with_usage_and_model() {
        let o: Value = serde_json::from_slice(&openai_plain(&call(false), b"hi there")).unwrap();
        assert_eq!(o["model"], "gpt-\"x");
        assert_eq!(o["choices"][0]["message"]["content"], "hi there");
        assert_eq!(o["usage"]["total_tokens"], 14);
        let a: Value = serde_json::from_slice(&anthropic_plain(&call(false), b"hi")).unwrap();
        assert_eq!(a["content"][0]["text"], "hi");
        assert_eq!(a["usage"]["output_tokens"], 3);
        assert_eq!(a["usage"]["input_tokens"], 11);
    }

    #[test]
    fn openai_stream_splits_the_text_and_reports_usage_only_when_asked() {
        for include in [false, true] {
            let plan = openai_stream(&call(include), text(10));
            let events = data_events(&frames(&plan));
            let content: String = events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(content.as_bytes(), &text(10)[..]);
            let usage: Vec<_> = events.iter().filter(|e| e["usage"].is_object()).collect();
            assert_eq!(usage.len(), usize::from(include));
            assert!(frames(&plan).last().unwrap().starts_with(b"data: [DONE]"));
        }
    }

    #[test]
    fn anthropic_stream_has_every_event_and_the_usage() {
        let plan = anthropic_stream(&call(false), text(5));
        let events = data_events(&frames(&plan));
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[7]["usage"]["output_tokens"], 3);
        assert_eq!(events[0]["message"]["model"], "gpt-\"x");
    }
}
