//! Body shapes the fixtures do not cover: pure JSON in, JSON out.

use serde_json::json;

use super::*;

#[test]
fn data_urls_are_blobs_and_audio_is_a_blob() {
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"file_id": "file-1"}}
    ]}]});
    let c = from_request(Family::Chat, &req);
    assert_eq!(
        c.input[0]["parts"],
        json!([
            {"type": "blob", "modality": "image", "mime_type": "image/jpeg", "content": "/9j/4AAQ"},
            {"type": "blob", "modality": "audio", "mime_type": "audio/mp3", "content": "UklGRg=="},
            {"type": "file", "file": {"file_id": "file-1"}}
        ])
    );
}

#[test]
fn a_cut_stream_has_an_empty_finish_reason() {
    let resp =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hel"}}]});
    let out = from_response(Family::Chat, &resp);
    assert_eq!(out[0]["finish_reason"], "");
}

#[test]
fn responses_input_string_and_incomplete_output() {
    let (system, input) = responses::input(&json!({"input": "Hi"}));
    assert!(system.is_empty());
    assert_eq!(
        input,
        vec![json!({"role": "user", "parts": [{"type": "text", "content": "Hi"}]})]
    );
    let resp = json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking"}]},
                   {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Part"}]}]});
    let out = from_response(Family::Responses, &resp);
    assert_eq!(out[0]["finish_reason"], "length");
    assert_eq!(
        out[0]["parts"],
        json!([{"type": "reasoning", "content": "Thinking"}, {"type": "text", "content": "Part"}])
    );
}

#[test]
fn anthropic_error_bodies_have_no_output() {
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert!(from_response(Family::Anthropic, &err).is_empty());
    let (system, _) = anthropic::input(&json!({"system": "Be terse.", "messages": []}));
    assert_eq!(
        system,
        vec![json!({"type": "text", "content": "Be terse."})]
    );
}

#[test]
fn finish_reasons_map_onto_the_conventions() {
    for (from, to) in [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("tool_calls", "tool_call"),
        ("tool_use", "tool_call"),
        ("content_filter", "content_filter"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
    ] {
        assert_eq!(finish_reason(from), to, "{from}");
    }
}

#[test]
fn legacy_prompt_lists_and_embeddings() {
    let c = from_request(Family::Completions, &json!({"prompt": ["a", "b"]}));
    assert_eq!(c.input[0]["parts"].as_array().unwrap().len(), 2);
    let tokens = from_request(Family::Completions, &json!({"prompt": [1, 2, 3]}));
    assert!(tokens.input.is_empty());
    let e = from_request(Family::Embeddings, &json!({"input": "x"}));
    assert!(e.input.is_empty() && e.system.is_empty());
}
