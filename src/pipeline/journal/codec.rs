//! The journal's record format: one [`Exchange`] as a protobuf message
//! (prost-derived; no `.proto` file, the structs below are the schema).
//!
//! Pure: bytes in, bytes out. Instants are stored as offsets from the
//! exchange's start (an `Instant` means nothing to another process) and
//! rebuilt around the decoding process's clock; only differences between
//! them are ever used. Field tags are a stable on-disk contract: add fields
//! with new tags, never renumber.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;

use crate::capture_budget::Shortfall;
use crate::context::CallContext;
use crate::exchange::{CapturedBody, Exchange, ResponseHead};
use crate::route::Api;
use crate::tee::{BodyEnd, Capture};

/// Format version written in every record; a reader refuses others.
const VERSION: u32 = 1;

#[derive(Clone, PartialEq, Message)]
struct ExchangeRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    span_id: Vec<u8>,
    #[prost(string, tag = "4")]
    api: String,
    #[prost(string, tag = "5")]
    provider: String,
    #[prost(string, optional, tag = "6")]
    deployment: Option<String>,
    #[prost(string, tag = "7")]
    method: String,
    #[prost(string, tag = "8")]
    path: String,
    #[prost(uint64, tag = "9")]
    started_unix_nanos: u64,
    #[prost(uint64, tag = "10")]
    duration_nanos: u64,
    #[prost(message, optional, tag = "11")]
    request: Option<BodyRecord>,
    #[prost(message, optional, tag = "12")]
    response_head: Option<HeadRecord>,
    #[prost(message, optional, tag = "13")]
    response: Option<BodyRecord>,
    #[prost(string, optional, tag = "14")]
    proxy_error: Option<String>,
    #[prost(uint32, optional, tag = "15")]
    proxy_status: Option<u32>,
    /// Why the usage injection added may have reached the client.
    #[prost(string, optional, tag = "20")]
    usage_hiding_failed: Option<String>,
    /// The call's context headers ([`crate::context`]).
    #[prost(message, optional, tag = "21")]
    context: Option<ContextRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct ContextRecord {
    #[prost(string, optional, tag = "1")]
    user: Option<String>,
    #[prost(string, optional, tag = "2")]
    session: Option<String>,
    #[prost(string, optional, tag = "3")]
    trace_name: Option<String>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<PairRecord>,
    #[prost(message, repeated, tag = "5")]
    metadata: Vec<PairRecord>,
    #[prost(string, optional, tag = "6")]
    client_request_id: Option<String>,
    #[prost(string, optional, tag = "7")]
    traceparent: Option<String>,
    #[prost(uint32, tag = "8")]
    dropped: u32,
    /// `CallContext::agent_session` (tag 30: clear of the context's own).
    #[prost(string, optional, tag = "30")]
    agent_session: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PairRecord {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

fn context_record(c: &CallContext) -> Option<ContextRecord> {
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(key, value)| PairRecord {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    };
    (!c.is_empty()).then(|| ContextRecord {
        user: c.user.clone(),
        session: c.session.clone(),
        trace_name: c.trace_name.clone(),
        tags: pairs(&c.tags),
        metadata: pairs(&c.metadata),
        client_request_id: c.client_request_id.clone(),
        traceparent: c.traceparent.clone(),
        dropped: u32::try_from(c.dropped).unwrap_or(u32::MAX),
        agent_session: c.agent_session.clone(),
    })
}

/// The context a record holds, as bounded as when it was taken.
fn call_context(r: Option<ContextRecord>) -> CallContext {
    let Some(r) = r else {
        return CallContext::default();
    };
    let pairs = |v: Vec<PairRecord>| {
        v.into_iter()
            .take(crate::context::MAX_PAIRS)
            .map(|p| (p.key, p.value))
            .collect()
    };
    CallContext {
        user: r.user,
        session: r.session,
        trace_name: r.trace_name,
        tags: pairs(r.tags),
        metadata: pairs(r.metadata),
        client_request_id: r.client_request_id,
        traceparent: r.traceparent,
        dropped: r.dropped as usize,
        agent_session: r.agent_session,
    }
}

#[derive(Clone, PartialEq, Message)]
struct BodyRecord {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
    #[prost(uint64, tag = "2")]
    total_bytes: u64,
    /// Byte offset where each recorded frame ended ...
    #[prost(uint64, repeated, tag = "3")]
    frame_ends: Vec<u64>,
    /// ... and when it arrived, in nanoseconds after the exchange started.
    #[prost(uint64, repeated, tag = "4")]
    frame_nanos: Vec<u64>,
    /// 0 complete, 1 error, 2 cancelled.
    #[prost(uint32, tag = "5")]
    end: u32,
    #[prost(string, tag = "6")]
    end_error: String,
    #[prost(string, optional, tag = "7")]
    content_type: Option<String>,
    #[prost(string, optional, tag = "8")]
    content_encoding: Option<String>,
    /// Why keeping stopped mid-body (`memory_budget`), if it did.
    #[prost(string, optional, tag = "9")]
    cut: Option<String>,
    /// Why the body was not captured at all, if it was not.
    #[prost(string, optional, tag = "10")]
    skipped: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct HeadRecord {
    #[prost(uint32, tag = "1")]
    status: u32,
    #[prost(string, optional, tag = "2")]
    content_type: Option<String>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(uint64, tag = "4")]
    at_nanos: u64,
    /// The provider's request id.
    #[prost(string, optional, tag = "5")]
    request_id: Option<String>,
}

/// Only the trace id of an [`ExchangeRecord`]: every other field is skipped
/// unread.
#[derive(Clone, PartialEq, Message)]
struct TraceIdOnly {
    #[prost(bytes = "vec", tag = "2")]
    trace_id: Vec<u8>,
}

/// A record's trace id without decoding the rest of it (the bodies are
/// skipped, not read): for naming a record that must not be decoded.
pub fn peek_trace_id(bytes: &[u8]) -> Option<[u8; 16]> {
    TraceIdOnly::decode(bytes).ok()?.trace_id.try_into().ok()
}

/// Why a journal record could not be turned back into an exchange.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an exchange record: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("exchange record version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("exchange record has a bad {0}")]
    Field(&'static str),
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn since(start: Instant, at: Instant) -> u64 {
    nanos(at.saturating_duration_since(start))
}

/// Keeps a body's data within `limit` bytes; the capture stays honest
/// (`total_bytes` is unchanged, so the cut shows as truncation).
fn body_record(body: &CapturedBody, start: Instant, limit: usize) -> BodyRecord {
    let mut data = body.capture.bytes();
    data.truncate(limit);
    let (frame_ends, frame_nanos) = body
        .capture
        .frame_times
        .iter()
        .map(|(end, at)| (*end, since(start, *at)))
        .unzip();
    let (end, end_error) = match &body.end {
        BodyEnd::Complete => (0, String::new()),
        BodyEnd::Error(e) => (1, e.clone()),
        BodyEnd::Cancelled => (2, String::new()),
    };
    BodyRecord {
        data,
        total_bytes: body.capture.total_bytes,
        frame_ends,
        frame_nanos,
        end,
        end_error,
        content_type: body.content_type.clone(),
        content_encoding: body.content_encoding.clone(),
        cut: body.capture.cut().map(|c| c.as_str().to_string()),
        skipped: body.capture.skipped().map(|c| c.as_str().to_string()),
    }
}

/// The record of an exchange, its captured bodies cut to `body_limit` bytes
/// each.
pub fn encode(ex: &Exchange, body_limit: usize) -> Vec<u8> {
    let start = ex.started;
    ExchangeRecord {
        version: VERSION,
        trace_id: ex.trace_id.to_vec(),
        span_id: ex.span_id.to_vec(),
        api: ex.api.label().to_string(),
        provider: ex.provider.to_string(),
        deployment: ex.deployment.clone(),
        method: ex.method.clone(),
        path: ex.path.clone(),
        started_unix_nanos: ex
            .started_wall
            .duration_since(UNIX_EPOCH)
            .map(nanos)
            .unwrap_or(0),
        duration_nanos: since(start, ex.ended),
        request: ex
            .request
            .as_ref()
            .map(|b| body_record(b, start, body_limit)),
        response_head: ex.response_head.as_ref().map(|h| HeadRecord {
            status: u32::from(h.status),
            content_type: h.content_type.clone(),
            content_encoding: h.content_encoding.clone(),
            at_nanos: since(start, h.at),
            request_id: h.request_id.clone(),
        }),
        response: ex
            .response
            .as_ref()
            .map(|b| body_record(b, start, body_limit)),
        proxy_error: ex.proxy_error.clone(),
        proxy_status: ex.proxy_status.map(u32::from),
        usage_hiding_failed: ex.usage_hiding_failed.clone(),
        context: context_record(&ex.context),
    }
    .encode_to_vec()
}

fn captured(b: BodyRecord, start: Instant) -> Result<CapturedBody, DecodeError> {
    if b.frame_ends.len() != b.frame_nanos.len() {
        return Err(DecodeError::Field("frame list"));
    }
    let frame_times = b
        .frame_ends
        .into_iter()
        .zip(b.frame_nanos)
        .map(|(end, n)| (end, start + Duration::from_nanos(n)))
        .collect();
    let end = match b.end {
        0 => BodyEnd::Complete,
        1 => BodyEnd::Error(b.end_error),
        2 => BodyEnd::Cancelled,
        _ => return Err(DecodeError::Field("body end")),
    };
    // A reason this build does not know still reads as a shortfall.
    let shortfall =
        |r: Option<String>| r.map(|r| Shortfall::from_label(&r).unwrap_or(Shortfall::MemoryBudget));
    let (cut, skipped) = (shortfall(b.cut), shortfall(b.skipped));
    Ok(CapturedBody {
        capture: Capture::restored(b.data, b.total_bytes, frame_times)
            .with_shortfalls(cut, skipped),
        end,
        content_type: b.content_type,
        content_encoding: b.content_encoding,
    })
}

/// The exchange a record holds. Its instants are rebuilt around now.
pub fn decode(bytes: &[u8]) -> Result<Exchange, DecodeError> {
    let r = ExchangeRecord::decode(bytes)?;
    if r.version != VERSION {
        return Err(DecodeError::Version(r.version));
    }
    let trace_id = r
        .trace_id
        .try_into()
        .map_err(|_| DecodeError::Field("trace id"))?;
    let span_id = r
        .span_id
        .try_into()
        .map_err(|_| DecodeError::Field("span id"))?;
    let api = Api::from_label(&r.api).ok_or(DecodeError::Field("api"))?;
    let provider =
        crate::route::known_provider(&r.provider).ok_or(DecodeError::Field("provider"))?;
    let started = Instant::now();
    let status = |s: u32| u16::try_from(s).map_err(|_| DecodeError::Field("status"));
    let response_head = match r.response_head {
        Some(h) => Some(ResponseHead {
            status: status(h.status)?,
            content_type: h.content_type,
            content_encoding: h.content_encoding,
            at: started + Duration::from_nanos(h.at_nanos),
            request_id: h.request_id,
        }),
        None => None,
    };
    Ok(Exchange {
        trace_id,
        span_id,
        api,
        provider,
        deployment: r.deployment,
        method: r.method,
        path: r.path,
        started_wall: SystemTime::UNIX_EPOCH + Duration::from_nanos(r.started_unix_nanos),
        started,
        ended: started + Duration::from_nanos(r.duration_nanos),
        request: r.request.map(|b| captured(b, started)).transpose()?,
        response_head,
        response: r.response.map(|b| captured(b, started)).transpose()?,
        proxy_error: r.proxy_error,
        proxy_status: r.proxy_status.map(status).transpose()?,
        usage_hiding_failed: r.usage_hiding_failed,
        context: call_context(r.context),
        // Applied before the record was written.
        privacy: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tee::Capture;

    fn body(data: &'static [u8], end: BodyEnd) -> CapturedBody {
        CapturedBody {
            capture: Capture::whole(&Bytes::from_static(data), 1 << 20),
            end,
            content_type: Some("application/json".into()),
            content_encoding: None,
        }
    }

    fn sample() -> Exchange {
        let started = Instant::now();
        Exchange {
            trace_id: [7; 16],
            span_id: [9; 8],
            api: Api::Messages,
            provider: "anthropic",
            deployment: Some("claude".into()),
            method: "POST".into(),
            path: "/v1/messages".into(),
            started_wall: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            started,
            ended: started + Duration::from_millis(1500),
            request: Some(body(b"{\"model\":\"m\"}", BodyEnd::Complete)),
            response_head: Some(ResponseHead {
                status: 200,
                content_type: Some("text/event-stream".into()),
                content_encoding: Some("gzip".into()),
                at: started + Duration::from_millis(200),
                request_id: Some("req_provider_1".into()),
            }),
            response: Some(body(
                b"event: x\ndata: {}\n\n",
                BodyEnd::Error("reset".into()),
            )),
            proxy_error: None,
            proxy_status: None,
            usage_hiding_failed: Some("an SSE event longer than 1048576 bytes".into()),
            context: crate::context::CallContext {
                user: Some("alice".into()),
                session: Some("sess-1".into()),
                trace_name: Some("triage".into()),
                tags: vec![("env".into(), "prod".into())],
                metadata: vec![("ticket".into(), "T-1".into())],
                client_request_id: Some("req-7".into()),
                traceparent: None,
                dropped: 2,
                agent_session: Some("claude-1".into()),
            },
            privacy: Default::default(),
        }
    }

    #[test]
    fn an_exchange_survives_the_round_trip() {
        let ex = sample();
        let back = decode(&encode(&ex, usize::MAX)).unwrap();
        assert_eq!(back.trace_id, ex.trace_id);
        assert_eq!(back.span_id, ex.span_id);
        assert_eq!(back.api, ex.api);
        assert_eq!(back.provider, "anthropic");
        assert_eq!(back.deployment.as_deref(), Some("claude"));
        assert_eq!(
            (back.method.as_str(), back.path.as_str()),
            ("POST", "/v1/messages")
        );
        assert_eq!(back.started_wall, ex.started_wall);
        assert_eq!(back.ended - back.started, Duration::from_millis(1500));
        let head = back.response_head.as_ref().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.at - back.started, Duration::from_millis(200));
        assert_eq!(head.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(head.request_id.as_deref(), Some("req_provider_1"));
        let req = back.request.as_ref().unwrap();
        assert_eq!(&req.bytes()[..], b"{\"model\":\"m\"}");
        assert_eq!(req.end, BodyEnd::Complete);
        let resp = back.response.as_ref().unwrap();
        assert_eq!(&resp.bytes()[..], b"event: x\ndata: {}\n\n");
        assert_eq!(resp.end, BodyEnd::Error("reset".into()));
        assert_eq!(resp.capture.frame_times.len(), 1);
        assert_eq!(resp.capture.frame_times[0].0, 19);
        assert!(!resp.capture.truncated());
        assert_eq!(back.usage_hiding_failed, ex.usage_hiding_failed);
        assert_eq!(back.context, ex.context);
    }

    #[test]
    fn the_same_span_comes_out_of_a_decoded_exchange() {
        let ex = sample();
        let back = decode(&encode(&ex, usize::MAX)).unwrap();
        let (a, _) = crate::trace::build(&ex, 1 << 20);
        let (b, _) = crate::trace::build(&back, 1 << 20);
        assert_eq!(
            crate::otlp::to_span(&a),
            crate::otlp::to_span(&b),
            "the trace is the one the live exchange would have made"
        );
    }

    #[test]
    fn a_record_written_before_the_provider_request_id_still_decodes() {
        // A head as an older build wrote it: tags 1-4 only.
        #[derive(Clone, PartialEq, Message)]
        struct OldHead {
            #[prost(uint32, tag = "1")]
            status: u32,
            #[prost(uint64, tag = "4")]
            at_nanos: u64,
        }
        let old = OldHead {
            status: 201,
            at_nanos: 5,
        };
        let head = HeadRecord::decode(&old.encode_to_vec()[..]).unwrap();
        assert_eq!((head.status, head.request_id.clone()), (201, None));
        let mut r = ExchangeRecord::decode(&encode(&sample(), usize::MAX)[..]).unwrap();
        r.response_head = Some(head);
        let back = decode(&r.encode_to_vec()).unwrap();
        assert_eq!(back.response_head.unwrap().request_id, None);
    }

    #[test]
    fn a_body_over_the_limit_is_cut_and_shows_as_truncated() {
        let ex = sample();
        let back = decode(&encode(&ex, 4)).unwrap();
        let resp = back.response.unwrap();
        assert_eq!(&resp.bytes()[..], b"even");
        assert!(resp.capture.truncated());
        assert_eq!(resp.capture.total_bytes, 19);
    }

    #[test]
    fn budget_shortfalls_survive_the_round_trip() {
        let mut ex = sample();
        let skipped = Capture::skip(Shortfall::MemoryBudget).with_body(&Bytes::from_static(b"abc"));
        ex.request.as_mut().unwrap().capture = skipped;
        let budget = crate::capture_budget::CaptureBudget::new(4);
        let mut cut = Capture::budgeted(100, budget.reservation());
        cut.record(&Bytes::from_static(b"0123456789"));
        ex.response.as_mut().unwrap().capture = cut;
        let back = decode(&encode(&ex, usize::MAX)).unwrap();
        let (req, resp) = (back.request.unwrap(), back.response.unwrap());
        assert_eq!(req.capture.skipped(), Some(Shortfall::MemoryBudget));
        assert_eq!((req.capture.kept(), req.capture.total_bytes), (0, 3));
        assert_eq!(resp.capture.cut(), Some(Shortfall::MemoryBudget));
        assert_eq!(resp.capture.skipped(), None);
        assert!(resp.capture.truncated());
        assert_eq!(resp.capture.total_bytes, 10);
    }

    #[test]
    fn the_trace_id_is_read_without_decoding_the_record() {
        let ex = sample();
        assert_eq!(peek_trace_id(&encode(&ex, usize::MAX)), Some(ex.trace_id));
        assert_eq!(peek_trace_id(b"\xff\xff\xff"), None);
        assert_eq!(peek_trace_id(b""), None, "no trace id");
    }

    #[test]
    fn garbage_and_other_versions_are_errors_not_panics() {
        assert!(decode(b"\xff\xff\xff").is_err());
        let mut r = ExchangeRecord::decode(&encode(&sample(), usize::MAX)[..]).unwrap();
        r.version = 2;
        assert!(matches!(
            decode(&r.encode_to_vec()),
            Err(DecodeError::Version(2))
        ));
        r.version = VERSION;
        r.trace_id = vec![1, 2];
        assert!(matches!(
            decode(&r.encode_to_vec()),
            Err(DecodeError::Field("trace id"))
        ));
        for n in 0..200 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = decode(&junk);
        }
    }
}
