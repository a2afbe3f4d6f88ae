//! Which conversation a call belongs to, when the caller did not say:
//! a pure, bounded session recogniser (no I/O; time is passed in).
//!
//! Sources, first match wins ([`Source`] says which one answered):
//! 1. `given`: the caller's explicit session (`x-llmtap-session`).
//! 2. `responses_chain`: the Responses API's `conversation` (its id is the
//!    session), or `previous_response_id` when that response was seen
//!    ([`Recogniser::observe_response`] teaches response id -> session).
//! 3. `agent_header` / `agent_metadata`: the ids coding agents send
//!    ([`agents`]: Claude Code, Codex, Qwen Code, `x-session-id`).
//! 4. `history_prefix`: a chat request whose history extends one seen
//!    before continues its session ([`history`] hashes; rules in
//!    `docs/sessions.md`).
//! 5. `new`: none matched; a fresh random id.
//!
//! Memory is bounded by design: two [`lru::Lru`] maps keyed by 64-bit hashes
//! (never text), each capped in entries and expiring idle entries; a session
//! id is at most [`agents::MAX_SESSION_LEN`] bytes and shared between the
//! entries of one session.

pub mod agents;
pub mod history;
pub mod lru;
pub mod shared;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::route::Api;
use lru::Lru;

/// How a session id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller said (`x-llmtap-session`).
    Given,
    /// Responses API `conversation` or a known `previous_response_id`.
    ResponsesChain,
    /// A coding agent's session header.
    AgentHeader,
    /// A coding agent's session in the body's metadata.
    AgentMetadata,
    /// The message history extends an earlier request's.
    HistoryPrefix,
    /// Nothing matched: a new session.
    New,
}

impl Source {
    /// The name used in traces and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Given => "given",
            Source::ResponsesChain => "responses_chain",
            Source::AgentHeader => "agent_header",
            Source::AgentMetadata => "agent_metadata",
            Source::HistoryPrefix => "history_prefix",
            Source::New => "new",
        }
    }
}

/// The answer: the session id and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub session: String,
    pub source: Source,
}

/// Settings (proposed keys in `docs/sessions.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Recognise sessions from message history (source 4).
    pub history: bool,
    /// Forget a history prefix or response id unused for this long.
    pub ttl: Duration,
    /// The most history prefixes remembered.
    pub max_prefixes: usize,
    /// The most response ids remembered.
    pub max_responses: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            history: true,
            ttl: Duration::from_secs(6 * 3600),
            max_prefixes: 50_000,
            max_responses: 50_000,
        }
    }
}

/// What one request says, as far as sessions go.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub api: Api,
    /// The request body (`Value::Null` when it is not JSON).
    pub body: &'a Value,
    pub headers: &'a HeaderMap,
    /// The caller's explicit session (`x-llmtap-session`), if any.
    pub given: Option<&'a str>,
}

/// A remembered history prefix.
struct Prefix {
    session: Arc<str>,
    /// The hash of the first history seen extending this one by one more
    /// message: a different next message later is a fork (module docs).
    next: Option<u64>,
}

/// The recogniser. Not thread-safe by itself: hold it behind a mutex.
pub struct Recogniser {
    config: SessionConfig,
    key: RandomState,
    prefixes: Lru<Prefix>,
    responses: Lru<Arc<str>>,
    rng: fastrand::Rng,
}

impl Recogniser {
    /// An empty recogniser.
    pub fn new(config: SessionConfig) -> Self {
        Recogniser {
            prefixes: Lru::new(config.max_prefixes, config.ttl),
            responses: Lru::new(config.max_responses, config.ttl),
            key: RandomState::new(),
            rng: fastrand::Rng::new(),
            config,
        }
    }

    /// The session of `call` at time `now`, remembering its history so
    /// that later calls continuing it are recognised.
    pub fn recognise(&mut self, call: Call<'_>, now: Duration) -> Found {
        let hashes = if self.config.history {
            history::prefix_hashes(call.api, call.body, &self.key)
        } else {
            None
        };
        let found = self
            .explicit(call, now)
            .or_else(|| self.by_history(hashes.as_deref(), now))
            .unwrap_or_else(|| Found {
                session: self.new_id(),
                source: Source::New,
            });
        if let Some(h) = hashes.as_deref() {
            self.remember(h, &found.session, now);
        }
        found
    }

    /// [`Recogniser::recognise`] on a raw body (not JSON: no body sources).
    pub fn recognise_bytes(
        &mut self,
        api: Api,
        body: &[u8],
        headers: &HeaderMap,
        given: Option<&str>,
        now: Duration,
    ) -> Found {
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        let call = Call {
            api,
            body: &body,
            headers,
            given,
        };
        self.recognise(call, now)
    }

    /// Learns that the response `response_id` belongs to `session`, so that
    /// a request naming it as `previous_response_id` continues `session`.
    pub fn observe_response(&mut self, session: &str, response_id: &str, now: Duration) {
        let Some(session) = agents::clean(session) else {
            return;
        };
        let key = self.key.hash_one(response_id);
        self.responses.insert(key, Arc::from(session), now);
    }

    /// Sources 1 to 3.
    fn explicit(&mut self, call: Call<'_>, now: Duration) -> Option<Found> {
        let found = |session, source| Some(Found { session, source });
        if let Some(s) = call.given.and_then(agents::clean) {
            return found(s, Source::Given);
        }
        if call.api == Api::Responses {
            if let Some(s) = self.responses_chain(call.body, now) {
                return found(s, Source::ResponsesChain);
            }
        }
        if let Some(s) = agents::from_headers(call.headers) {
            return found(s, Source::AgentHeader);
        }
        agents::from_metadata(call.body).and_then(|s| found(s, Source::AgentMetadata))
    }

    /// `conversation` (a string id or `{"id": ...}`), else a known
    /// `previous_response_id`.
    fn responses_chain(&mut self, body: &Value, now: Duration) -> Option<String> {
        let conversation = body.get("conversation");
        let conversation = conversation
            .and_then(Value::as_str)
            .or_else(|| conversation?.get("id")?.as_str());
        if let Some(c) = conversation.and_then(agents::clean) {
            return Some(c);
        }
        let previous = body.get("previous_response_id")?.as_str()?;
        let key = self.key.hash_one(previous);
        self.responses.get_mut(key, now).map(|s| s.to_string())
    }

    /// Source 4: the longest earlier history this one starts with.
    fn by_history(&mut self, hashes: Option<&[u64]>, now: Duration) -> Option<Found> {
        let hashes = hashes?;
        let n = hashes.len() - 1; // messages
        for k in (1..=n).rev() {
            let Some(prefix) = self.prefixes.get_mut(hashes[k], now) else {
                continue;
            };
            if let Some(&next) = hashes.get(k + 1) {
                match prefix.next {
                    None => prefix.next = Some(next),
                    Some(seen) if seen != next => return None, // a fork
                    Some(_) => {}
                }
            }
            return Some(Found {
                session: prefix.session.to_string(),
                source: Source::HistoryPrefix,
            });
        }
        None
    }

    /// Remembers this request's whole history as belonging to `session`.
    fn remember(&mut self, hashes: &[u64], session: &str, now: Duration) {
        let full = hashes[hashes.len() - 1];
        if let Some(p) = self.prefixes.get_mut(full, now) {
            if &*p.session == session {
                return;
            }
        }
        let prefix = Prefix {
            session: self.shared(hashes, session, now),
            next: None,
        };
        self.prefixes.insert(full, prefix, now);
    }

    /// `session` as an `Arc`, shared with the entry of the prefix it
    /// continues when that one is the same session (no copy per turn).
    fn shared(&mut self, hashes: &[u64], session: &str, now: Duration) -> Arc<str> {
        for &h in hashes[1..hashes.len() - 1].iter().rev() {
            if let Some(p) = self.prefixes.get_mut(h, now) {
                if &*p.session == session {
                    return p.session.clone();
                }
                break;
            }
        }
        Arc::from(session)
    }

    /// A random id shaped like a UUID v4.
    fn new_id(&mut self) -> String {
        let v = (self.rng.u128(..) & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let hex = format!("{v:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// How many history prefixes and response ids are held (for metrics).
    pub fn held(&self) -> (usize, usize) {
        (self.prefixes.len(), self.responses.len())
    }
}

#[cfg(test)]
mod tests;
