//! The recogniser on whole conversations, as clients send them.

use super::*;
use serde_json::json;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rec() -> Recogniser {
    Recogniser::new(SessionConfig::default())
}

/// Recognises a body with no headers and no given session.
fn run(r: &mut Recogniser, api: Api, body: Value, at: u64) -> Found {
    let headers = HeaderMap::new();
    r.recognise(
        Call {
            api,
            body: &body,
            headers: &headers,
            given: None,
        },
        secs(at),
    )
}

fn chat(messages: Value) -> Value {
    json!({"model": "gpt-4o-mini", "messages": messages})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

const SYS: &str = "You are a helpful assistant.";

fn sys() -> Value {
    json!({"role": "system", "content": SYS})
}

#[test]
fn a_multi_turn_chat_is_one_session() {
    let mut r = rec();
    let t1 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([sys(), user("hi")])),
        0,
    );
    assert_eq!(t1.source, Source::New);
    let h2 = json!([sys(), user("hi"), assistant("hello"), user("a joke?")]);
    let t2 = run(&mut r, Api::ChatCompletions, chat(h2.clone()), 5);
    let mut h3 = h2.as_array().unwrap().clone();
    h3.extend([assistant("knock knock"), user("who's there")]);
    let t3 = run(&mut r, Api::ChatCompletions, chat(json!(h3.clone())), 9);
    h3.extend([assistant("lettuce"), user("lettuce who?")]);
    let t4 = run(&mut r, Api::ChatCompletions, chat(json!(h3)), 12);
    for t in [&t2, &t3, &t4] {
        assert_eq!(t.session, t1.session);
        assert_eq!(t.source, Source::HistoryPrefix);
    }
}

#[test]
fn interleaved_conversations_stay_apart() {
    let mut r = rec();
    let a1 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([sys(), user("plan a trip")])),
        0,
    );
    let b1 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([sys(), user("fix my code")])),
        1,
    );
    assert_ne!(a1.session, b1.session);
    let a = json!([
        sys(),
        user("plan a trip"),
        assistant("where?"),
        user("Rome")
    ]);
    let b = json!([
        sys(),
        user("fix my code"),
        assistant("paste it"),
        user("fn main(){}")
    ]);
    let b2 = run(&mut r, Api::ChatCompletions, chat(b), 2);
    let a2 = run(&mut r, Api::ChatCompletions, chat(a), 3);
    assert_eq!(a2.session, a1.session);
    assert_eq!(b2.session, b1.session);
}

#[test]
fn identical_openings_split_at_the_first_different_reply() {
    // Two users open with the same words: their first calls cannot be told
    // apart, but the second user's next turn carries a different reply.
    let mut r = rec();
    let a1 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([sys(), user("hi")])),
        0,
    );
    let b1 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([sys(), user("hi")])),
        1,
    );
    assert_eq!(b1.session, a1.session, "indistinguishable so far");
    let a2 = json!([sys(), user("hi"), assistant("Hello!"), user("weather?")]);
    let b2 = json!([sys(), user("hi"), assistant("Hi there."), user("news?")]);
    let a2 = run(&mut r, Api::ChatCompletions, chat(a2), 2);
    let b2 = run(&mut r, Api::ChatCompletions, chat(b2), 3);
    assert_eq!(a2.session, a1.session);
    assert_ne!(b2.session, a1.session);
    assert_eq!(b2.source, Source::New);
}

#[test]
fn editing_an_earlier_message_starts_a_new_session() {
    let mut r = rec();
    let first = run(&mut r, Api::ChatCompletions, chat(json!([user("2+2?")])), 0);
    let h = json!([user("2+2?"), assistant("4"), user("and 3+3?")]);
    run(&mut r, Api::ChatCompletions, chat(h), 1);
    let edited = json!([
        user("2+3?"),
        assistant("4"),
        user("and 3+3?"),
        assistant("6"),
        user("ok")
    ]);
    let e = run(&mut r, Api::ChatCompletions, chat(edited), 2);
    assert_ne!(e.session, first.session);
    assert_eq!(e.source, Source::New);
}

#[test]
fn editing_the_newest_message_stays_in_the_session() {
    let mut r = rec();
    let first = run(&mut r, Api::ChatCompletions, chat(json!([user("2+2?")])), 0);
    run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("2+2?"), assistant("4"), user("3+3?")])),
        1,
    );
    let redo = json!([user("2+2?"), assistant("4"), user("and 3+3?")]);
    let e = run(&mut r, Api::ChatCompletions, chat(redo), 2);
    assert_eq!(e.session, first.session);
}

#[test]
fn a_history_with_its_old_turns_dropped_starts_a_new_session() {
    // A sliding-window client sends only the last turns: nothing it sends
    // extends an earlier history. Documented; agents send a header instead.
    let mut r = rec();
    let h = json!([sys(), user("one"), assistant("1"), user("two")]);
    let first = run(&mut r, Api::ChatCompletions, chat(h), 0);
    let window = json!([sys(), user("two"), assistant("2"), user("three")]);
    let t = run(&mut r, Api::ChatCompletions, chat(window), 1);
    assert_ne!(t.session, first.session);
    assert_eq!(t.source, Source::New);
}

#[test]
fn an_identical_resend_is_the_same_session() {
    let mut r = rec();
    let h = json!([sys(), user("one"), assistant("1"), user("two")]);
    let a = run(&mut r, Api::ChatCompletions, chat(h.clone()), 0);
    let b = run(&mut r, Api::ChatCompletions, chat(h), 1);
    assert_eq!(b.session, a.session);
}

#[test]
fn openai_tool_call_turns_continue_the_session() {
    let mut r = rec();
    let q = user("weather in Paris?");
    let t1 = run(&mut r, Api::ChatCompletions, chat(json!([q])), 0);
    let call = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
        "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]});
    let result = json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"});
    let t2 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([q, call, result])),
        1,
    );
    let t3 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([
            q,
            call,
            result,
            assistant("18C and sunny"),
            user("and Rome?")
        ])),
        2,
    );
    assert_eq!(t2.session, t1.session);
    assert_eq!(t3.session, t1.session);
}

#[test]
fn anthropic_tool_use_turns_continue_the_session() {
    let mut r = rec();
    let body = |messages: Value| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
               "system": [{"type": "text", "text": "coder", "cache_control": {"type": "ephemeral"}}],
               "messages": messages})
    };
    let q = json!({"role": "user", "content": [{"type": "text", "text": "list files",
        "cache_control": {"type": "ephemeral"}}]});
    let t1 = run(&mut r, Api::Messages, body(json!([q])), 0);
    // Claude Code moves its cache marker to the newest message each turn.
    let q_moved = json!({"role": "user", "content": [{"type": "text", "text": "list files"}]});
    let call = json!({"role": "assistant", "content": [{"type": "text", "text": "Listing."},
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"cmd": "ls"}}]});
    let result = json!({"role": "user", "content": [{"type": "tool_result",
        "tool_use_id": "toolu_1", "content": "a.rs\nb.rs", "cache_control": {"type": "ephemeral"}}]});
    let t2 = run(
        &mut r,
        Api::Messages,
        body(json!([q_moved, call, result])),
        1,
    );
    assert_eq!(t2.session, t1.session);
    assert_eq!(t2.source, Source::HistoryPrefix);
}

#[test]
fn the_responses_chain_follows_previous_response_id() {
    let mut r = rec();
    let t1 = run(
        &mut r,
        Api::Responses,
        json!({"model": "gpt-4.1", "input": "hi"}),
        0,
    );
    r.observe_response(&t1.session, "resp_abc", secs(1));
    let next = json!({"model": "gpt-4.1", "previous_response_id": "resp_abc",
                      "input": [{"role": "user", "content": "more"}]});
    let t2 = run(&mut r, Api::Responses, next, 2);
    assert_eq!(
        t2,
        Found {
            session: t1.session.clone(),
            source: Source::ResponsesChain
        }
    );
    r.observe_response(&t2.session, "resp_def", secs(3));
    let t3 = run(
        &mut r,
        Api::Responses,
        json!({"previous_response_id": "resp_def", "input": "x"}),
        4,
    );
    assert_eq!(t3.session, t1.session);
    let unknown = run(
        &mut r,
        Api::Responses,
        json!({"previous_response_id": "resp_zzz", "input": "x"}),
        5,
    );
    assert_eq!(unknown.source, Source::New);
}

#[test]
fn a_responses_conversation_id_is_the_session() {
    let mut r = rec();
    for conversation in [json!("conv_123"), json!({"id": "conv_123"})] {
        let t = run(
            &mut r,
            Api::Responses,
            json!({"conversation": conversation, "input": "hi"}),
            0,
        );
        assert_eq!(
            t,
            Found {
                session: "conv_123".into(),
                source: Source::ResponsesChain
            }
        );
    }
}

#[test]
fn agent_ids_and_the_given_session_come_before_history() {
    let mut r = rec();
    let mut headers = HeaderMap::new();
    headers.insert("x-claude-code-session-id", "cc-1".parse().unwrap());
    let legacy = "user_ab12_account__session_meta-1";
    let body = json!({"metadata": {"user_id": legacy}, "messages": [user("hi")]});
    let call = |given| Call {
        api: Api::Messages,
        body: &body,
        headers: &headers,
        given,
    };
    let by_header = r.recognise(call(None), secs(0));
    assert_eq!(
        by_header,
        Found {
            session: "cc-1".into(),
            source: Source::AgentHeader
        }
    );
    let given = r.recognise(call(Some("mine")), secs(1));
    assert_eq!(
        given,
        Found {
            session: "mine".into(),
            source: Source::Given
        }
    );
    let none = HeaderMap::new();
    let meta = r.recognise(
        Call {
            api: Api::Messages,
            body: &body,
            headers: &none,
            given: None,
        },
        secs(2),
    );
    assert_eq!(
        meta,
        Found {
            session: "meta-1".into(),
            source: Source::AgentMetadata
        }
    );
}

#[test]
fn a_codex_request_is_recognised_by_its_session_header() {
    let mut r = rec();
    let mut headers = HeaderMap::new();
    headers.insert(
        "session_id",
        "019ee74f-22b5-7043-b5fc-697ca0fbd5a6".parse().unwrap(),
    );
    let found = r.recognise_bytes(
        Api::Responses,
        br#"{"input":"hi","store":false}"#,
        &headers,
        None,
        secs(0),
    );
    assert_eq!(found.session, "019ee74f-22b5-7043-b5fc-697ca0fbd5a6");
    assert_eq!(found.source, Source::AgentHeader);
}

#[test]
fn a_history_idle_past_the_ttl_is_forgotten() {
    let config = SessionConfig {
        ttl: secs(600),
        ..SessionConfig::default()
    };
    let mut r = Recogniser::new(config);
    let t1 = run(&mut r, Api::ChatCompletions, chat(json!([user("hi")])), 0);
    let h = json!([user("hi"), assistant("hello"), user("still there?")]);
    let late = run(&mut r, Api::ChatCompletions, chat(h.clone()), 600);
    assert_eq!(late.source, Source::New);
    assert_ne!(late.session, t1.session);
    let r2 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("hi")])),
        1000,
    );
    let soon = run(&mut r, Api::ChatCompletions, chat(h), 1599);
    assert_eq!(soon.session, r2.session);
}

#[test]
fn the_oldest_conversation_is_evicted_at_the_cap() {
    let config = SessionConfig {
        max_prefixes: 2,
        ..SessionConfig::default()
    };
    let mut r = Recogniser::new(config);
    let a = run(&mut r, Api::ChatCompletions, chat(json!([user("a")])), 0);
    let b = run(&mut r, Api::ChatCompletions, chat(json!([user("b")])), 1);
    run(&mut r, Api::ChatCompletions, chat(json!([user("c")])), 2);
    assert_eq!(r.held().0, 2);
    let a2 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("a"), assistant("A"), user("a?")])),
        3,
    );
    assert_ne!(a2.session, a.session, "a was evicted");
    let b2 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("b"), assistant("B"), user("b?")])),
        4,
    );
    assert_ne!(b2.session, b.session, "b was evicted by a2");
}

#[test]
fn with_history_off_every_unlabelled_call_is_new() {
    let config = SessionConfig {
        history: false,
        ..SessionConfig::default()
    };
    let mut r = Recogniser::new(config);
    let t1 = run(&mut r, Api::ChatCompletions, chat(json!([user("hi")])), 0);
    let t2 = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("hi"), assistant("yo"), user("?")])),
        1,
    );
    assert_eq!(t2.source, Source::New);
    assert_ne!(t2.session, t1.session);
    assert_eq!(r.held(), (0, 0));
}

#[test]
fn new_ids_are_distinct_uuid_v4_shapes() {
    let mut r = rec();
    let a = r.recognise_bytes(
        Api::Embeddings,
        b"not json",
        &HeaderMap::new(),
        None,
        secs(0),
    );
    let b = r.recognise_bytes(
        Api::Embeddings,
        b"not json",
        &HeaderMap::new(),
        None,
        secs(0),
    );
    assert_ne!(a.session, b.session);
    let parts: Vec<&str> = a.session.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'), "{}", a.session);
    assert!(
        matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
        "{}",
        a.session
    );
}

/// Request bodies the real openai (3.57) and anthropic (2.15) Python SDKs
/// sent over four turns (chat, messages, stateless responses), the caller appending the SDK's own response
/// objects (`refusal: null`, `annotations: []`, `citations: null`, moved
/// cache markers, tool calls and results): see the fixture's script.
const SDK_TURNS: &str = include_str!("../../tests/fixtures/sessions/sdk_turns.json");

#[test]
fn histories_resent_by_the_real_sdks_are_one_session() {
    let turns: Value = serde_json::from_str(SDK_TURNS).unwrap();
    for (key, api) in [
        ("openai_chat", Api::ChatCompletions),
        ("anthropic_messages", Api::Messages),
    ] {
        let bodies = turns[key].as_array().unwrap();
        assert!(bodies.len() >= 3, "{key}: the fixture has 3+ turns");
        let mut r = rec();
        let first = run(&mut r, api, bodies[0].clone(), 0);
        for (i, body) in bodies.iter().enumerate().skip(1) {
            let t = run(&mut r, api, body.clone(), i as u64);
            assert_eq!(t.session, first.session, "{key} turn {i}");
            assert_eq!(t.source, Source::HistoryPrefix, "{key} turn {i}");
        }
    }
}

#[test]
fn a_regenerated_reply_forks_a_new_session() {
    let mut r = rec();
    let first = run(
        &mut r,
        Api::ChatCompletions,
        chat(json!([user("a poem")])),
        0,
    );
    let kept = json!([user("a poem"), assistant("Roses are red"), user("another")]);
    assert_eq!(
        run(&mut r, Api::ChatCompletions, chat(kept), 1).session,
        first.session
    );
    let regenerated = json!([
        user("a poem"),
        assistant("Violets are blue"),
        user("another")
    ]);
    let t = run(&mut r, Api::ChatCompletions, chat(regenerated), 2);
    assert_ne!(t.session, first.session);
    assert_eq!(t.source, Source::New);
}
