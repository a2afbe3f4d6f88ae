//! The process's one [`Recogniser`], shared by the parse workers: each
//! traced call is recognised once, in the order the workers take calls
//! from the journal (the order their responses ended), and a Responses
//! answer's id is learned right after its request is recognised, so the
//! next turn (sent after that answer) finds it. The memory is the
//! process's: after a restart conversations in flight start new sessions.

use std::sync::Mutex;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::{Call, Found, Recogniser, SessionConfig};
use crate::route::Api;

/// What the parse stage knows about one call, as far as sessions go.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub api: Api,
    /// The request body (`None`: not JSON or past the parse budget).
    pub body: Option<&'a Value>,
    /// A coding agent's session header, read on the request path
    /// (`CallContext::agent_session`).
    pub agent_session: Option<&'a str>,
    /// `x-llmtap-session`.
    pub given: Option<&'a str>,
    /// The response's id (learned for `previous_response_id` on Responses).
    pub response_id: Option<&'a str>,
}

/// A mutex around the recogniser, and the clock it is given.
pub struct Shared {
    inner: Mutex<Recogniser>,
    start: Instant,
}

impl Shared {
    pub fn new(config: SessionConfig) -> Shared {
        Shared {
            inner: Mutex::new(Recogniser::new(config)),
            start: Instant::now(),
        }
    }

    /// The call's session, and the entries held afterwards (histories,
    /// response ids) for the gauges.
    pub fn recognise(&self, ask: Ask<'_>) -> (Found, (usize, usize)) {
        let mut headers = HeaderMap::new();
        if let Some(v) = ask
            .agent_session
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert("x-session-id", v);
        }
        let call = Call {
            api: ask.api,
            body: ask.body.unwrap_or(&Value::Null),
            headers: &headers,
            given: ask.given,
        };
        // A panic inside is contained by the parse worker; the maps stay usable.
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.start.elapsed();
        let found = r.recognise(call, now);
        if let (Api::Responses, Some(id)) = (ask.api, ask.response_id) {
            r.observe_response(&found.session, id, now);
        }
        (found, r.held())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Source;
    use serde_json::json;

    fn ask<'a>(api: Api, body: &'a Value, response_id: Option<&'a str>) -> Ask<'a> {
        Ask {
            api,
            body: Some(body),
            agent_session: None,
            given: None,
            response_id,
        }
    }

    #[test]
    fn a_responses_answer_id_continues_its_session() {
        let s = Shared::new(SessionConfig::default());
        let first = json!({"model": "gpt-4o", "input": "hi"});
        let (a, _) = s.recognise(ask(Api::Responses, &first, Some("resp_1")));
        let next = json!({"model": "gpt-4o", "input": "more", "previous_response_id": "resp_1"});
        let (b, held) = s.recognise(ask(Api::Responses, &next, Some("resp_2")));
        assert_eq!(b.session, a.session);
        assert_eq!(b.source, Source::ResponsesChain);
        assert_eq!(held.1, 2);
    }

    #[test]
    fn the_agent_header_read_on_the_request_path_is_used() {
        let s = Shared::new(SessionConfig::default());
        let body = json!({"messages": [{"role": "user", "content": "x"}]});
        let mut a = ask(Api::ChatCompletions, &body, None);
        a.agent_session = Some("codex-77");
        let (found, _) = s.recognise(a);
        assert_eq!(found.session, "codex-77");
        assert_eq!(found.source, Source::AgentHeader);
    }
}
