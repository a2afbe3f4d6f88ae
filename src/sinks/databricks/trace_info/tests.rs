use super::*;
use crate::sinks::databricks::fixtures::*;
use crate::sinks::databricks::group::by_trace;
use crate::sinks::databricks::span_doc::document;

fn info_of(span: Span, loc: &Location) -> Value {
    let req = batch(vec![span]);
    let groups = by_trace(&req);
    let doc = document(&groups[0], &loc.trace_id(&groups[0].hex_id()));
    build(&groups[0], loc, &doc)
}

fn exp() -> Location {
    Location::Experiment("1234".into())
}

#[test]
fn a_chat_call_carries_state_previews_usage_user_and_session() {
    let info = info_of(chat_span([0xab; 16], [1; 8]), &exp());
    assert_eq!(info["trace_id"], format!("tr-{}", "ab".repeat(16)));
    assert_eq!(
        info["trace_location"],
        json!({"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "1234"}})
    );
    assert_eq!(info["request_time"], "2025-11-24T16:00:00.123Z");
    assert_eq!(info["execution_duration"], "1.250s");
    assert_eq!(info["state"], "OK");
    assert_eq!(info["request_preview"], "Capital of France?");
    assert_eq!(info["response_preview"], "Paris.");
    let meta = &info["trace_metadata"];
    assert_eq!(meta["mlflow.trace_schema.version"], "3");
    assert_eq!(
        meta["mlflow.trace.tokenUsage"],
        r#"{"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}"#
    );
    assert_eq!(meta["mlflow.trace.user"], "alice");
    assert_eq!(meta["mlflow.trace.session"], "sess-42");
    assert!(
        meta.get("mlflow.trace.cost").is_none(),
        "no cost on the spans yet"
    );
    // Under 250 characters: the stored inputs whole.
    assert_eq!(meta["mlflow.traceInputs"], CHAT_IN);
    assert_eq!(
        info["tags"],
        json!({"mlflow.traceName": "Completions", "team": "search"})
    );
    // Size statistics as the client records them.
    let stats: Value =
        serde_json::from_str(meta["mlflow.trace.sizeStats"].as_str().unwrap()).unwrap();
    assert_eq!(stats["num_spans"], 1);
    assert_eq!(
        meta["mlflow.trace.sizeBytes"].as_str().unwrap(),
        stats["total_size_bytes"].to_string()
    );
    let body = start_trace_v3_body(&info);
    assert_eq!(body["trace"]["trace_info"], info);
}

#[test]
fn an_error_is_state_error_without_usage() {
    let info = info_of(error_span(), &exp());
    assert_eq!(info["state"], "ERROR");
    assert!(info["trace_metadata"]
        .get("mlflow.trace.tokenUsage")
        .is_none());
    // No `messages`/`choices` in an error body: the preview is the body.
    assert_eq!(
        info["response_preview"],
        r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#
    );
}

#[test]
fn a_stream_sums_its_rebuilt_outputs_and_cache_tokens() {
    let info = info_of(stream_span(), &exp());
    assert_eq!(info["response_preview"], "The capital is Paris.");
    assert!(info["trace_metadata"]["mlflow.trace.tokenUsage"]
        .as_str()
        .unwrap()
        .ends_with(r#""cache_read_input_tokens": 4}"#));
}

#[test]
fn embeddings_and_calls_without_outputs() {
    let info = info_of(embeddings_span(), &exp());
    assert_eq!(info["tags"]["mlflow.traceName"], "Embeddings");
    assert!(info["request_preview"]
        .as_str()
        .unwrap()
        .contains("text-embedding-3-small"));
    let info = info_of(no_usage_span(), &exp());
    assert!(
        info.get("response_preview").is_none(),
        "no outputs, no preview"
    );
    assert_eq!(info["request_preview"], "\"not json: a truncated body\"");
    assert_eq!(info["trace_metadata"]["mlflow.traceOutputs"], "");
}

#[test]
fn long_values_are_cut_as_the_client_cuts_them() {
    let mut r = chat_record([7; 16], [7; 8]);
    let long_user = "u".repeat(300);
    let long_q = "q".repeat(20_000);
    r.attributes
        .retain(|(k, _)| k != "user.id" && k != "mlflow.spanInputs");
    r.set("user.id", long_user.as_str());
    r.set(
        "mlflow.spanInputs",
        json!({"messages": [{"role": "user", "content": long_q}]}).to_string(),
    );
    r.set("mlflow.traceTag.long", "v".repeat(5000));
    let info = info_of(crate::otlp::to_span(&r), &exp());
    let meta = &info["trace_metadata"];
    assert_eq!(meta["mlflow.trace.user"].as_str().unwrap().len(), 250);
    let inputs = meta["mlflow.traceInputs"].as_str().unwrap();
    assert_eq!(inputs.len(), 250);
    assert!(inputs.ends_with("..."));
    let preview = info["request_preview"].as_str().unwrap();
    assert_eq!(preview.len(), PREVIEW);
    assert!(preview.ends_with("qq..."));
    assert_eq!(info["tags"]["long"].as_str().unwrap().len(), 4096);
}
const PREVIEW: usize = crate::sinks::databricks::preview::PREVIEW_MAX_DBX;

#[test]
fn a_uc_schema_location_uses_v4_ids_and_schema_version_4() {
    let loc = Location::UcSchema {
        catalog: "main".into(),
        schema: "traces".into(),
    };
    let info = info_of(chat_span([0xab; 16], [1; 8]), &loc);
    assert_eq!(
        info["trace_id"],
        "ab".repeat(16),
        "v4 bodies carry the bare id"
    );
    assert_eq!(info["trace_location"]["type"], "UC_SCHEMA");
    assert_eq!(
        info["trace_location"]["uc_schema"]["otel_spans_table_name"],
        UC_SCHEMA_SPANS_TABLE
    );
    assert_eq!(info["trace_metadata"]["mlflow.trace_schema.version"], "4");
    assert_eq!(loc.trace_id("ab"), "trace:/main.traces/ab");
}

#[test]
fn percentiles_interpolate() {
    assert_eq!(percentile(&[10, 20, 30, 40], 0.5), 25.0);
    assert_eq!(percentile(&[10], 0.75), 10.0);
    assert_eq!(percentile(&[], 0.25), 0.0);
}

#[test]
fn environment_tags_and_call_metadata_reach_the_trace_info() {
    use crate::otlp::request_with;
    use crate::record::AttrValue;
    let mut span = chat_span([0xab; 16], [1; 8]);
    let mut extra = crate::record::SpanRecord {
        trace_id: [0; 16],
        span_id: [1; 8],
        parent_span_id: None,
        name: String::new(),
        start_unix_nano: 0,
        end_unix_nano: 0,
        status: crate::record::SpanStatus::Ok,
        attributes: vec![],
        events: vec![],
    };
    extra.set("llmtap.metadata.ticket", "T-1");
    extra.set("llmtap.metadata.mlflow.trace.user", "spoof");
    span.attributes
        .extend(crate::otlp::to_span(&extra).attributes);
    let resource = [
        (
            "deployment.environment.name".to_string(),
            AttrValue::from("prod"),
        ),
        ("service.name".to_string(), AttrValue::from("svc")),
    ];
    let req = request_with(&resource, vec![span]);
    let groups = by_trace(&req);
    let loc = exp();
    let doc = document(&groups[0], &loc.trace_id(&groups[0].hex_id()));
    let info = build(&groups[0], &loc, &doc);
    assert_eq!(
        info["tags"],
        json!({"mlflow.traceName": "Completions", "team": "search",
            "deployment.environment.name": "prod", "service.name": "svc"}),
        "telemetry.sdk.* is left out"
    );
    assert_eq!(info["trace_metadata"]["ticket"], "T-1");
    assert_eq!(info["trace_metadata"]["mlflow.trace.user"], "alice");
}
