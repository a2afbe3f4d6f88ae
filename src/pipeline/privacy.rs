//! Where privacy is applied to an exchange: after the call, before anything
//! of it is written — in the journal writer (spool on) or the parse worker
//! (spool off), never on the request path. The exchange's
//! [`Plan`](crate::privacy::Plan) says what to do: reduce the bodies to
//! their metadata (`metadata` capture mode) and/or redact the bodies and
//! the call's context. Done once: the plan is reset, so a record read back
//! from the journal is not rewritten again.
//!
//! Fails closed: if rewriting an exchange panicked, its bodies are dropped.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::context::CallContext;
use crate::exchange::{CapturedBody, Exchange};
use crate::metrics::Metrics;
use crate::privacy::body::{self, Op};
use crate::privacy::Redactor;
use crate::tee::Capture;

/// Applies `ex`'s privacy plan; counts the redactions in `metrics`.
pub fn apply(ex: &mut Exchange, metrics: &Metrics) {
    let plan = std::mem::take(&mut ex.privacy);
    let Some(op) = plan.op() else { return };
    let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut n = 0;
        for b in [ex.request.as_mut(), ex.response.as_mut()]
            .into_iter()
            .flatten()
        {
            n += rewrite(b, op);
        }
        if let Some(r) = op.redactor() {
            n += redact_context(&mut ex.context, r);
        }
        n
    }));
    match done {
        Ok(n) => {
            metrics.redactions.fetch_add(n as u64, Relaxed);
        }
        Err(_) => {
            tracing::error!(trace_id = %crate::exchange::mlflow_trace_id(&ex.trace_id), "applying the privacy settings panicked; the call is traced without its bodies");
            ex.request = None;
            ex.response = None;
        }
    }
}

/// Rewrites one captured body for `op`; the redactions made.
fn rewrite(b: &mut CapturedBody, op: Op<'_>) -> usize {
    let data = b.bytes();
    if data.is_empty() {
        return 0;
    }
    let out = body::rewrite(
        &data,
        b.content_type.as_deref(),
        b.content_encoding.as_deref(),
        op,
    );
    let old = &b.capture;
    let last = old.frame_times.last().map(|(_, t)| *t);
    let len = out.bytes.len();
    // Arrival times follow the events they belonged to (time to first token).
    let times = match (&out.events, last) {
        (Some(events), _) => events
            .iter()
            .filter_map(|(old_end, new_end)| {
                let at = old.arrival_of(old_end.saturating_sub(1) as u64)?;
                Some((*new_end as u64, at))
            })
            .collect(),
        (None, Some(at)) if len > 0 => vec![(len as u64, at)],
        (None, _) => Vec::new(),
    };
    let total = match old.truncated() {
        true => old.total_bytes.max(len as u64 + 1),
        false => len as u64,
    };
    let capture = Capture::restored(Bytes::from(out.bytes), total, times)
        .with_shortfalls(old.cut(), old.skipped());
    b.capture = capture;
    if out.decoded {
        b.content_encoding = None;
    }
    out.redactions
}

/// Redacts the context's free text: user, session, trace name, tag and
/// metadata values (ids the agent sends — request id, traceparent — are
/// left as they are).
fn redact_context(c: &mut CallContext, r: &Redactor) -> usize {
    let mut n = 0;
    let mut one = |s: &mut String| {
        if let Some((new, k)) = r.redact_counted(s, |x| x.into()) {
            *s = new;
            n += k;
        }
    };
    [&mut c.user, &mut c.session, &mut c.trace_name]
        .into_iter()
        .flatten()
        .for_each(&mut one);
    c.tags
        .iter_mut()
        .chain(c.metadata.iter_mut())
        .for_each(|(_, v)| one(v));
    n
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::privacy::{CaptureMode, Plan};
    use crate::route::Api;
    use crate::tee::BodyEnd;

    fn body(data: &[u8], content_type: &str, times: Vec<(u64, Instant)>) -> CapturedBody {
        CapturedBody {
            capture: Capture::restored(Bytes::copy_from_slice(data), data.len() as u64, times),
            end: BodyEnd::Complete,
            content_type: Some(content_type.into()),
            content_encoding: None,
        }
    }

    fn exchange(plan: Plan, request: CapturedBody, response: CapturedBody) -> Exchange {
        Exchange {
            trace_id: [1; 16],
            span_id: [2; 8],
            api: Api::ChatCompletions,
            provider: "openai",
            deployment: None,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            started_wall: SystemTime::now(),
            started: Instant::now(),
            ended: Instant::now(),
            request: Some(request),
            response_head: None,
            response: Some(response),
            proxy_error: None,
            proxy_status: None,
            usage_hiding_failed: None,
            context: CallContext {
                user: Some("carol@example.com".into()),
                tags: vec![("team".into(), "x".into())],
                ..Default::default()
            },
            privacy: plan,
        }
    }

    fn chunk(text: &str) -> String {
        let v = serde_json::json!({"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}}]});
        format!("data: {v}\n\n")
    }

    #[test]
    fn redaction_rewrites_bodies_context_and_carries_frame_times() {
        let r = Arc::new(Redactor::new(&["email".into()], &[]).unwrap());
        let plan = Plan {
            mode: CaptureMode::Full,
            redactor: Some(r),
        };
        let t0 = Instant::now();
        let (a, b) = (chunk("to dave@exa"), chunk("mple.org ok"));
        let stream = format!("{a}{b}");
        let times = vec![
            (a.len() as u64, t0 + Duration::from_millis(5)),
            (stream.len() as u64, t0 + Duration::from_millis(9)),
        ];
        let req =
            br#"{"model":"m","messages":[{"role":"user","content":"I am erin@example.net"}]}"#;
        let mut ex = exchange(
            plan,
            body(req, "application/json", vec![]),
            body(stream.as_bytes(), "text/event-stream", times),
        );
        let metrics = Metrics::default();
        apply(&mut ex, &metrics);
        assert!(ex.privacy.is_noop(), "the plan is done once");
        let all = format!(
            "{}{}{:?}",
            String::from_utf8_lossy(&ex.request.as_ref().unwrap().bytes()),
            String::from_utf8_lossy(&ex.response.as_ref().unwrap().bytes()),
            ex.context
        );
        for secret in [
            "erin@",
            "example.net",
            "dave@",
            "exa\"",
            "mple.org",
            "carol@",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert_eq!(metrics.redactions.load(Relaxed), 3);
        let resp = &ex.response.as_ref().unwrap().capture;
        assert_eq!(resp.frame_times.len(), 2);
        assert_eq!(resp.frame_times[0].1, t0 + Duration::from_millis(5));
        assert_eq!(resp.frame_times[1].0, resp.kept() as u64);
        assert!(!resp.truncated());
    }

    #[test]
    fn metadata_mode_keeps_no_text() {
        let plan = Plan {
            mode: CaptureMode::Metadata,
            redactor: None,
        };
        let req = br#"{"model":"m","messages":[{"role":"user","content":"my secret prompt"}]}"#;
        let resp = br#"{"model":"m","choices":[{"message":{"role":"assistant","content":"the secret answer"}}],"usage":{"total_tokens":5}}"#;
        let mut ex = exchange(
            plan,
            body(req, "application/json", vec![]),
            body(resp, "application/json", vec![]),
        );
        apply(&mut ex, &Metrics::default());
        let req = ex.request.as_ref().unwrap().bytes();
        let resp = ex.response.as_ref().unwrap().bytes();
        for b in [&req, &resp] {
            let s = String::from_utf8_lossy(b);
            assert!(
                !s.contains("secret") && s.contains("\"model\":\"m\""),
                "{s}"
            );
        }
        assert!(String::from_utf8_lossy(&resp).contains("\"total_tokens\":5"));
        assert_eq!(ex.context.user.as_deref(), Some("carol@example.com"));
    }
}
