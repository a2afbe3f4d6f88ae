//! The wire side of OTLP/HTTP, pure: a canonical batch in the configured
//! vocabulary ([`convert`]), its body ([`body`]), how a status is read
//! ([`classify`], the OTLP specification's retry rules) and the partial
//! success an accepting server may report ([`partial_success`]).

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::config::{Protocol, Semconv};
use super::{genai, openinference};
use crate::sinks::Verdict;

/// The batch with its spans in the vocabulary `semconv` names (the
/// canonical batch itself for `mlflow`).
pub fn convert(
    batch: &ExportTraceServiceRequest,
    semconv: Semconv,
) -> Cow<'_, ExportTraceServiceRequest> {
    if semconv == Semconv::Mlflow {
        return Cow::Borrowed(batch);
    }
    let span = |s: &Span| {
        let (mut mapped, family) = genai::to_genai(s);
        if semconv == Semconv::GenaiOpenInference {
            openinference::add(&mut mapped, s, family);
        }
        mapped
    };
    let resource_spans = batch
        .resource_spans
        .iter()
        .map(|r| ResourceSpans {
            resource: r.resource.clone(),
            scope_spans: r
                .scope_spans
                .iter()
                .map(|sc| ScopeSpans {
                    scope: sc.scope.clone(),
                    spans: sc.spans.iter().map(span).collect(),
                    schema_url: sc.schema_url.clone(),
                })
                .collect(),
            schema_url: r.schema_url.clone(),
        })
        .collect();
    Cow::Owned(ExportTraceServiceRequest { resource_spans })
}

/// The request body and its `Content-Type`.
pub fn body(req: &ExportTraceServiceRequest, protocol: Protocol) -> (Vec<u8>, &'static str) {
    match protocol {
        Protocol::HttpProtobuf => (req.encode_to_vec(), "application/x-protobuf"),
        Protocol::HttpJson => (
            crate::otlp::to_json_line(req).into_bytes(),
            "application/json",
        ),
    }
}

/// The OTLP/HTTP rules: 429, 502, 503 and 504 are retried (honouring
/// `Retry-After`); every other 4xx and 5xx is not. 413 is split by the
/// pipeline (the halves are new requests, not a retry of this one).
pub fn classify(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        413 => Verdict::Split,
        429 | 502 | 503 | 504 => match crate::sinks::classify(status, retry_after) {
            Verdict::Retry { after } => Verdict::Retry { after },
            _ => Verdict::Retry { after: None },
        },
        _ => Verdict::DontRetry,
    }
}

/// What a 2xx answer's `partial_success` says: (rejected spans, message),
/// or `None` when everything was accepted (or the body says nothing).
/// OTLP-JSON int64 values may come as strings or numbers: both are read.
pub fn partial_success(body: &[u8], protocol: Protocol) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = match protocol {
        Protocol::HttpProtobuf => {
            let p = ExportTraceServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_spans, p.error_message)
        }
        Protocol::HttpJson => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            let p = v.get("partialSuccess").or(v.get("partial_success"))?;
            let n = p.get("rejectedSpans").or(p.get("rejected_spans"));
            let rejected = match n {
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                Some(n) => n.as_i64().unwrap_or(0),
                None => 0,
            };
            let message = p
                .get("errorMessage")
                .or(p.get("error_message"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            (rejected, message)
        }
    };
    (rejected > 0 || !message.is_empty()).then(|| (rejected, message.chars().take(300).collect()))
}
