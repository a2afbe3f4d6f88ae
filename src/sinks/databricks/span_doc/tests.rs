use super::*;
use crate::sinks::databricks::fixtures::*;
use crate::sinks::databricks::group::by_trace;

fn doc_of(span: opentelemetry_proto::tonic::trace::v1::Span) -> Value {
    let req = batch(vec![span]);
    let groups = by_trace(&req);
    let loc = crate::sinks::databricks::trace_info::Location::Experiment("1".into());
    document(&groups[0], &loc.trace_id(&groups[0].hex_id()))
}

#[test]
fn a_chat_span_as_span_to_dict_writes_it() {
    let doc = doc_of(chat_span([0xab; 16], [0x01; 8]));
    let span = &doc["spans"][0];
    // base64 ids, null parent, integer nanos, status code names.
    assert_eq!(span["trace_id"], "q6urq6urq6urq6urq6urqw==");
    assert_eq!(span["span_id"], "AQEBAQEBAQE=");
    assert_eq!(span["parent_span_id"], Value::Null);
    assert_eq!(span["start_time_unix_nano"], START);
    assert_eq!(span["end_time_unix_nano"], START + 1_250_000_000);
    assert_eq!(
        span["status"],
        json!({"code": "STATUS_CODE_OK", "message": ""})
    );
    assert_eq!(span["links"], json!([]));
    let attrs = &span["attributes"];
    // JSON text stays as it is; plain strings and numbers are json.dumps-ed.
    assert_eq!(attrs["mlflow.spanType"], "\"CHAT_MODEL\"");
    assert_eq!(
        attrs["mlflow.chat.tokenUsage"],
        r#"{"input_tokens":9,"output_tokens":3,"total_tokens":12}"#
    );
    let inputs: Value = serde_json::from_str(attrs["mlflow.spanInputs"].as_str().unwrap()).unwrap();
    assert_eq!(inputs["messages"][1]["content"], "Capital of France?");
    assert_eq!(attrs["http.response.status_code"], "200");
    assert_eq!(attrs["gen_ai.request.temperature"], "0.7");
    assert_eq!(attrs["llmtap.stream"], "false");
    assert_eq!(attrs["gen_ai.response.finish_reasons"], r#"["stop"]"#);
    assert_eq!(attrs["user.id"], "\"alice\"");
    assert_eq!(attrs[REQUEST_ID], format!("\"tr-{}\"", "ab".repeat(16)));
}

#[test]
fn an_error_span_keeps_its_status_message_and_exception_event() {
    let doc = doc_of(error_span());
    let span = &doc["spans"][0];
    assert_eq!(span["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(span["status"]["message"], "HTTP 429: Rate limit reached");
    let event = &span["events"][0];
    assert_eq!(event["name"], "exception");
    assert_eq!(event["time_unix_nano"], START + 1_250_000_000);
    // Event attributes are plain values, not JSON-encoded.
    assert_eq!(event["attributes"]["exception.type"], "ProviderError");
}

#[test]
fn text_that_is_not_json_is_encoded_as_a_json_string() {
    let doc = doc_of(no_usage_span());
    let attrs = &doc["spans"][0]["attributes"];
    assert_eq!(attrs["mlflow.spanInputs"], "\"not json: a truncated body\"");
    assert!(attrs.get("mlflow.spanOutputs").is_none());
    // Numbers-as-text and literals are strings, not JSON values.
    for (text, want) in [
        ("123", "\"123\""),
        ("true", "\"true\""),
        ("[1]", "[1]"),
        ("\"q\"", "\"q\""),
    ] {
        let v = AnyValue {
            value: Some(any_value::Value::StringValue(text.into())),
        };
        assert_eq!(attribute_text(&v), want, "{text}");
    }
}

#[test]
fn the_document_serialises_as_python_does() {
    let doc = doc_of(embeddings_span());
    let text = String::from_utf8(document_bytes(&doc)).unwrap();
    assert!(text.starts_with(r#"{"spans": [{"#), "{text}");
    assert!(text.contains(r#""links": []"#), "{text}");
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, doc);
}

#[test]
fn a_child_span_names_its_parent() {
    let doc = doc_of(child_span([1; 16], [2; 8], [3; 8]));
    assert_eq!(doc["spans"][0]["parent_span_id"], "AwMDAwMDAwM=");
}
