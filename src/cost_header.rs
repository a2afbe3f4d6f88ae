//! The optional `x-llmtap-cost-usd` response header (`[cost]
//! response_header = true`). A call's cost needs its usage, which comes at
//! the end of the body, after the head would normally be sent. So, with
//! the setting on, a traced, successful, NON-streamed response is held
//! until its body is complete (at most the capture cap; a longer or
//! unannounced-then-too-long body goes on without the header), its cost
//! computed from the held bytes, then the head is sent with the header and
//! the same bytes after it. Event streams get no header (their usage ends
//! the stream). The setting off: nothing here runs.
//!
//! The value is the call's total cost in USD as a decimal (`0.0001275`);
//! no header when the model has no price or the body has no usage.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::response::Parts;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};

use crate::cost::PriceTable;
use crate::route::Api;
use crate::trace::facts::CallFacts;
use crate::upstream::{BoxError, ProxyBody};

/// The header's name.
pub const COST_HEADER: &str = "x-llmtap-cost-usd";

/// Whether a response may be held for the header: a 2xx that is not an
/// event stream and does not announce more than `cap` bytes.
pub fn applies(parts: &Parts, cap: usize) -> bool {
    let text = |h| {
        parts
            .headers
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let stream =
        text(header::CONTENT_TYPE).is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
    let too_long = text(header::CONTENT_LENGTH)
        .and_then(|l| l.trim().parse::<u64>().ok())
        .is_some_and(|l| l > cap as u64);
    parts.status.is_success() && !stream && !too_long
}

/// The total cost of a complete non-streamed response body, or `None`.
pub fn cost_of(
    table: &PriceTable,
    api: Api,
    content_encoding: Option<&str>,
    body: &[u8],
    deployment: Option<&str>,
    cap: usize,
) -> Option<f64> {
    let (text, cut) = crate::parse::decode::decode_body(content_encoding, body, cap).ok()?;
    if cut {
        return None;
    }
    let outcome = crate::trace::parse_response(api, &text, false);
    let facts = CallFacts::of(api, None, &outcome, deployment);
    let usage = facts.usage?;
    let (_, _, cost) = crate::pipeline::enrich::priced(table, &facts, &usage)?;
    Some(cost.total)
}

/// Holds `body` until it ends (or passes `cap` bytes), then adds the header
/// to `parts` when the cost is known; returns the body to send, the held
/// frames first.
pub async fn hold(
    parts: &mut Parts,
    mut body: ProxyBody,
    table: &PriceTable,
    api: Api,
    deployment: Option<&str>,
    cap: usize,
) -> ProxyBody {
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut held = 0usize;
    let mut failed: Option<BoxError> = None;
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(e)) => {
                failed = Some(e);
                break false;
            }
            Some(Ok(f)) => {
                held += f.data_ref().map_or(0, Bytes::len);
                frames.push_back(f);
                if held > cap {
                    break false;
                }
            }
        }
    };
    if complete {
        let mut whole = Vec::with_capacity(held);
        for f in frames.iter().filter_map(Frame::data_ref) {
            whole.extend_from_slice(f);
        }
        let encoding = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let cost = cost_of(table, api, encoding, &whole, deployment, cap);
        if let Some(v) = cost.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
            parts.headers.insert(COST_HEADER, v);
        }
    }
    let head = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
    let tail = match (complete, failed) {
        (true, _) => futures_util::stream::empty().boxed(),
        (false, Some(e)) => futures_util::stream::once(async move { Err(e) }).boxed(),
        (false, None) => StreamExt::boxed(BodyStream::new(body)),
    };
    StreamBody::new(head.chain(tail)).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn chat(model: &str) -> Vec<u8> {
        format!(r#"{{"id":"c1","object":"chat.completion","model":"{model}","choices":[],"usage":{{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}}}"#).into_bytes()
    }

    fn parts(content_type: &str) -> Parts {
        let (p, _) = http::Response::builder()
            .header("content-type", content_type)
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    fn full(b: Vec<u8>) -> ProxyBody {
        Full::new(Bytes::from(b))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    #[test]
    fn a_priced_body_has_a_cost_and_an_unknown_model_none() {
        let t = crate::cost::builtin();
        let c = cost_of(
            t,
            Api::ChatCompletions,
            None,
            &chat("gpt-4o"),
            None,
            1 << 20,
        );
        // gpt-4o: $2.5 in, $10 out per million.
        assert_eq!(c, Some(0.0035));
        let none = cost_of(
            t,
            Api::ChatCompletions,
            None,
            &chat("no-such-model-x"),
            None,
            1 << 20,
        );
        assert_eq!(none, None);
    }

    #[test]
    fn streams_and_long_bodies_are_not_held() {
        assert!(applies(&parts("application/json"), 10));
        assert!(!applies(&parts("text/event-stream; charset=utf-8"), 10));
        let mut long = parts("application/json");
        long.headers.insert("content-length", HeaderValue::from(11));
        assert!(!applies(&long, 10));
    }

    #[tokio::test]
    async fn the_held_body_goes_out_whole_with_the_header() {
        let mut p = parts("application/json");
        let t = crate::cost::builtin();
        let b = hold(
            &mut p,
            full(chat("gpt-4o")),
            t,
            Api::ChatCompletions,
            None,
            1 << 20,
        )
        .await;
        assert_eq!(p.headers.get(COST_HEADER).unwrap(), "0.0035");
        let out = b.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], &chat("gpt-4o")[..]);
        let mut p = parts("application/json");
        let b = hold(
            &mut p,
            full(chat("gpt-4o")),
            t,
            Api::ChatCompletions,
            None,
            10,
        )
        .await;
        assert!(
            p.headers.get(COST_HEADER).is_none(),
            "past the cap: no header"
        );
        let out = b.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], &chat("gpt-4o")[..]);
    }
}
