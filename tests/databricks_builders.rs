//! The Databricks sink's trace info against MLflow's own client code: for
//! llmtap-shaped traces, the StartTraceV3 body the sink builds must equal
//! the one the MLflow Python client (3.17.2, in the test venv) computes from
//! the same spans — previews, truncation, token usage, cost, size
//! statistics and all — and the span document the sink uploads must be one
//! the client reads back (`TraceData.from_dict`).

#[path = "support/mlflow.rs"]
mod mlflow;

use std::io::Write;
use std::process::{Command, Stdio};

use llmtap::otlp::{request_with, to_span};
use llmtap::record::{AttrValue, SpanEvent, SpanRecord, SpanStatus};
use llmtap::sinks::databricks::{group, span_doc, trace_info};
use serde_json::{json, Value};

const START: u64 = 1_764_000_000_123_456_789;

fn record(n: u8, inputs: &str, outputs: Option<&str>) -> SpanRecord {
    let mut r = SpanRecord {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: None,
        name: "Completions".into(),
        start_unix_nano: START + u64::from(n),
        end_unix_nano: START + 1_250_000_000 + u64::from(n) * 1_000_001,
        status: SpanStatus::Ok,
        attributes: Vec::new(),
        events: Vec::new(),
    };
    r.set("mlflow.spanType", "CHAT_MODEL");
    r.set("mlflow.spanInputs", inputs);
    if let Some(o) = outputs {
        r.set("mlflow.spanOutputs", o);
    }
    r.set("mlflow.llm.model", "gpt-4o-mini");
    r.set("mlflow.llm.provider", "openai");
    r.set("mlflow.message.format", "openai");
    r.set("mlflow.traceTag.mlflow.traceName", "Completions");
    r.set("gen_ai.request.temperature", 0.7);
    r.set("http.response.status_code", 200i64);
    r.set("llmtap.stream", false);
    r.set(
        "gen_ai.response.finish_reasons",
        AttrValue::StrArray(vec!["stop".into()]),
    );
    r
}

fn chat(q: &str, a: &str) -> (String, String) {
    (
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": q}]})
        .to_string(),
        json!({"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": a}}],
               "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
        .to_string(),
    )
}

/// Traces of every shape the sink meets.
fn records() -> Vec<SpanRecord> {
    let mut out = Vec::new();
    let (i, o) = chat("Capital of France?", "Paris.");
    let mut plain = record(1, &i, Some(&o));
    plain.set(
        "mlflow.chat.tokenUsage",
        r#"{"input_tokens":9,"output_tokens":3,"total_tokens":12}"#,
    );
    plain.set("user.id", "alice");
    plain.set("session.id", "sess-42");
    plain.set("mlflow.traceTag.team", "search");
    out.push(plain);

    let (i, o) = chat("Ünïcödé — 日本語 😀?", "Ja: 東京 \u{7f} \"quoted\"\n");
    let mut unicode = record(2, &i, Some(&o));
    unicode.set(
        "mlflow.chat.tokenUsage",
        r#"{"input_tokens":9,"output_tokens":6,"total_tokens":15,"cache_read_input_tokens":4}"#,
    );
    unicode.set(
        "mlflow.llm.cost",
        r#"{"input_cost":0.00012,"output_cost":0.5,"total_cost":0.50012}"#,
    );
    out.push(unicode);

    let mut error = record(3, &i, Some(r#"{"error":{"message":"Rate limit reached"}}"#));
    error.status = SpanStatus::Error("HTTP 429: Rate limit reached".into());
    error.events.push(SpanEvent {
        name: "exception".into(),
        time_unix_nano: error.end_unix_nano,
        attributes: vec![
            ("exception.type".into(), "ProviderError".into()),
            (
                "exception.message".into(),
                "HTTP 429: Rate limit reached".into(),
            ),
        ],
    });
    out.push(error);

    let long_q = "q".repeat(12_000);
    let (i, o) = chat(&long_q, &"a".repeat(300));
    let mut long = record(4, &i, Some(&o));
    long.set("user.id", "u".repeat(300));
    long.set("mlflow.traceTag.long", "v".repeat(5000));
    out.push(long);

    let mut embeddings = record(
        5,
        r#"{"model":"text-embedding-3-small","input":"hello"}"#,
        Some(r#"{"object":"list","data":[{"index":0,"dimensions":1536}]}"#),
    );
    embeddings.name = "Embeddings".into();
    out.push(embeddings);

    let mut responses = record(
        6,
        r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"x"},{"type":"text","text":"Hi there"}]}]}"#,
        Some(
            r#"{"output":[{"type":"reasoning"},{"role":"assistant","content":[{"type":"output_text","text":"Hello"}]}]}"#,
        ),
    );
    responses.name = "Responses".into();
    out.push(responses);

    out.push(record(7, "not json: a cut body", None));
    out
}

#[test]
fn trace_info_equals_what_the_mlflow_client_computes() {
    let spans: Vec<_> = records().iter().map(to_span).collect();
    // As the pipeline sends to Databricks by default: no service.name.
    let batch = request_with(&[], spans);
    let groups = group::by_trace(&batch);
    assert_eq!(groups.len(), 7);
    let loc = trace_info::Location::Experiment("4242".into());
    let mut input = String::new();
    let mut ours = Vec::new();
    for g in &groups {
        let doc = span_doc::document(g, &g.mlflow_id());
        let text = String::from_utf8(span_doc::document_bytes(&doc)).unwrap();
        input.push_str(&format!(
            "{{\"document\": {text}, \"experiment_id\": \"4242\"}}\n"
        ));
        ours.push(trace_info::start_trace_v3_body(&trace_info::build(
            g, &loc, &doc,
        )));
    }
    let theirs = run_client(&input);
    assert_eq!(theirs.len(), ours.len(), "one body per trace");
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "\nours:   {ours}\ntheirs: {theirs}");
    }
}

#[test]
fn uc_trace_info_equals_what_the_mlflow_client_computes() {
    let spans: Vec<_> = records().iter().map(to_span).collect();
    // As the pipeline sends to Databricks by default: no service.name.
    let batch = request_with(&[], spans);
    let groups = group::by_trace(&batch);
    let loc = trace_info::Location::UcSchema {
        catalog: "main".into(),
        schema: "llmtap".into(),
    };
    let mut input = String::new();
    let mut ours = Vec::new();
    for g in &groups {
        // Sizes count the spans as the client holds them, with v4 ids.
        let doc = span_doc::document(g, &loc.trace_id(&g.hex_id()));
        let text = String::from_utf8(span_doc::document_bytes(&doc)).unwrap();
        input.push_str(&format!(
            "{{\"document\": {text}, \"uc_schema\": \"main.llmtap\"}}\n"
        ));
        ours.push(trace_info::build(g, &loc, &doc));
    }
    let theirs = run_client(&input);
    assert_eq!(theirs.len(), ours.len(), "one body per trace");
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "\nours:   {ours}\ntheirs: {theirs}");
    }
}

fn run_client(input: &str) -> Vec<Value> {
    let python = mlflow::ensure_venv();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/python/dbx_trace_info.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dbx_trace_info.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON body per line"))
        .collect()
}
