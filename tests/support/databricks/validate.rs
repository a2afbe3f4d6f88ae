//! Pure checks of what a client sends to the Databricks stand-in: the
//! StartTraceV3 trace info, the span document PUT to the signed URL, an
//! assessment, the v4 (UC) trace info and the UC table header. Each returns
//! the Databricks-style rejection (status, error code, message) the stand-in
//! answers with. The rules are those of docs/databricks-contract.md, taken
//! from what MLflow 3.17.2 sends (tests/fixtures/databricks/*.json).

use base64::Engine;
use serde_json::{Map, Value};

/// Longest request/response preview MLflow sends to Databricks
/// (`TRACE_REQUEST_RESPONSE_PREVIEW_MAX_LENGTH_DBX`).
pub const PREVIEW_MAX_CHARS: usize = 10_000;
/// Longest trace-metadata key or value (`MAX_CHARS_IN_TRACE_INFO_METADATA`).
pub const METADATA_MAX_CHARS: usize = 250;
/// Longest tag key (`MAX_CHARS_IN_TRACE_INFO_TAGS_KEY`).
pub const TAG_KEY_MAX_CHARS: usize = 250;
/// Longest tag value (`MAX_CHARS_IN_TRACE_INFO_TAGS_VALUE`).
pub const TAG_VALUE_MAX_CHARS: usize = 4096;

/// A rejection: HTTP status, Databricks `error_code`, message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

pub fn bad(message: impl Into<String>) -> Reject {
    Reject {
        status: 400,
        code: "INVALID_PARAMETER_VALUE",
        message: message.into(),
    }
}

pub fn not_found(message: impl Into<String>) -> Reject {
    Reject {
        status: 404,
        code: "RESOURCE_DOES_NOT_EXIST",
        message: message.into(),
    }
}

const TRACE_INFO_FIELDS: &[&str] = &[
    "trace_id",
    "client_request_id",
    "trace_location",
    "request_preview",
    "response_preview",
    "request_time",
    "execution_duration",
    "state",
    "trace_metadata",
    "assessments",
    "tags",
];

/// Checks a StartTraceV3 body `{"trace":{"trace_info":{...}}}` and returns
/// the trace info. `experiment_exists` says whether an experiment id is known.
pub fn start_trace(body: &[u8], experiment_exists: impl Fn(&str) -> bool) -> Result<Value, Reject> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let info = v
        .get("trace")
        .and_then(|t| t.get("trace_info"))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing required field: trace.trace_info"))?;
    for k in info.keys() {
        if !TRACE_INFO_FIELDS.contains(&k.as_str()) {
            return Err(bad(format!("unknown field trace_info.{k}")));
        }
    }
    let id = req_str(info, "trace_id")?;
    if !is_v3_trace_id(id) {
        return Err(bad(format!(
            "trace_id must be 'tr-' + 32 lowercase hex digits, got {id:?}"
        )));
    }
    let exp = experiment_location(info)?;
    if !experiment_exists(exp) {
        return Err(not_found(format!("No Experiment with id={exp} exists")));
    }
    common_info(info)?;
    let md = info.get("trace_metadata").and_then(Value::as_object);
    if md
        .and_then(|m| m.get("mlflow.trace_schema.version"))
        .and_then(Value::as_str)
        != Some("3")
    {
        return Err(bad(
            "trace_metadata['mlflow.trace_schema.version'] must be \"3\"",
        ));
    }
    Ok(Value::Object(info.clone()))
}

/// Checks the fields StartTraceV3 and the v4 info call share: time,
/// duration, state, previews, metadata and tags.
fn common_info(info: &Map<String, Value>) -> Result<(), Reject> {
    let t = req_str(info, "request_time")?;
    if !is_rfc3339(t) {
        return Err(bad(format!(
            "request_time must be an RFC 3339 timestamp, got {t:?}"
        )));
    }
    let d = req_str(info, "execution_duration")?;
    if !is_proto_duration(d) {
        return Err(bad(format!(
            "execution_duration must be a duration like \"0.25s\", got {d:?}"
        )));
    }
    let state = req_str(info, "state")?;
    if !["OK", "ERROR", "IN_PROGRESS"].contains(&state) {
        return Err(bad(format!(
            "state must be OK, ERROR or IN_PROGRESS, got {state:?}"
        )));
    }
    for key in ["request_preview", "response_preview"] {
        match info.get(key) {
            None => {}
            Some(Value::String(s)) if s.chars().count() <= PREVIEW_MAX_CHARS => {}
            Some(Value::String(_)) => {
                return Err(bad(format!(
                    "{key} is longer than {PREVIEW_MAX_CHARS} characters"
                )))
            }
            Some(_) => return Err(bad(format!("{key} must be a string"))),
        }
    }
    string_map(
        info,
        "trace_metadata",
        METADATA_MAX_CHARS,
        METADATA_MAX_CHARS,
    )?;
    string_map(info, "tags", TAG_KEY_MAX_CHARS, TAG_VALUE_MAX_CHARS)?;
    Ok(())
}

fn experiment_location(info: &Map<String, Value>) -> Result<&str, Reject> {
    let loc = info
        .get("trace_location")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing required field: trace_location"))?;
    if loc.get("type").and_then(Value::as_str) != Some("MLFLOW_EXPERIMENT") {
        return Err(bad("trace_location.type must be MLFLOW_EXPERIMENT"));
    }
    loc.get("mlflow_experiment")
        .and_then(|e| e.get("experiment_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            bad("missing required field: trace_location.mlflow_experiment.experiment_id")
        })
}

fn req_str<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str, Reject> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{key} must be a string"))),
        None => Err(bad(format!("missing required field: {key}"))),
    }
}

fn string_map(o: &Map<String, Value>, key: &str, kmax: usize, vmax: usize) -> Result<(), Reject> {
    let Some(v) = o.get(key) else { return Ok(()) };
    let m = v
        .as_object()
        .ok_or_else(|| bad(format!("{key} must be a map of strings")))?;
    for (k, v) in m {
        let s = v
            .as_str()
            .ok_or_else(|| bad(format!("{key}[{k:?}] must be a string")))?;
        if k.chars().count() > kmax {
            return Err(bad(format!("{key} key longer than {kmax} characters")));
        }
        if s.chars().count() > vmax {
            return Err(bad(format!(
                "{key}[{k:?}] is longer than {vmax} characters"
            )));
        }
    }
    Ok(())
}

/// `tr-` followed by 32 lowercase hex digits.
pub fn is_v3_trace_id(id: &str) -> bool {
    id.strip_prefix("tr-").is_some_and(is_hex32)
}

pub fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    if !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// A protobuf JSON duration: seconds with up to 9 fraction digits, then `s`.
pub fn is_proto_duration(s: &str) -> bool {
    let Some(n) = s.strip_suffix('s') else {
        return false;
    };
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(n.contains('.') && frac.is_empty())
}

/// Checks the span document PUT to the signed URL of trace `trace_id`
/// (`tr-<hex>`): `{"spans":[...]}` in MLflow's span JSON (ids base64,
/// integer nanosecond times, status code names, attributes a map of
/// JSON-encoded strings carrying `mlflow.traceRequestId`).
pub fn span_document(body: &[u8], trace_id: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("span document is not JSON: {e}"))?;
    let spans = v
        .get("spans")
        .and_then(Value::as_array)
        .ok_or("span document has no \"spans\" array")?;
    if spans.is_empty() {
        return Err("span document has no spans".into());
    }
    let hex = trace_id.strip_prefix("tr-").unwrap_or(trace_id);
    let mut roots = 0;
    for (i, s) in spans.iter().enumerate() {
        roots += span(s, hex, trace_id).map_err(|e| format!("spans[{i}]: {e}"))?;
    }
    if roots != 1 {
        return Err(format!(
            "span document must have exactly one root span, has {roots}"
        ));
    }
    Ok(v)
}

/// Checks one span; returns 1 if it is a root span.
fn span(s: &Value, hex: &str, trace_id: &str) -> Result<usize, String> {
    let o = s.as_object().ok_or("not an object")?;
    let tid = b64_field(o, "trace_id", 16)?;
    if hex_of(&tid) != hex {
        return Err(format!("trace_id does not belong to trace {trace_id}"));
    }
    b64_field(o, "span_id", 8)?;
    let root = match o.get("parent_span_id") {
        None | Some(Value::Null) => 1,
        Some(_) => {
            b64_field(o, "parent_span_id", 8)?;
            0
        }
    };
    o.get("name")
        .and_then(Value::as_str)
        .ok_or("name must be a string")?;
    let start = o
        .get("start_time_unix_nano")
        .and_then(Value::as_u64)
        .ok_or("start_time_unix_nano must be an integer")?;
    let end = o
        .get("end_time_unix_nano")
        .and_then(Value::as_u64)
        .ok_or("end_time_unix_nano must be an integer")?;
    if end < start {
        return Err("end_time_unix_nano is before start_time_unix_nano".into());
    }
    let code = o
        .get("status")
        .and_then(|st| st.get("code"))
        .and_then(Value::as_str)
        .ok_or("status.code missing")?;
    if !["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"].contains(&code) {
        return Err(format!("status.code {code:?} is not a STATUS_CODE_* name"));
    }
    let attrs = o
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or("attributes must be a map")?;
    for (k, v) in attrs {
        let text = v
            .as_str()
            .ok_or_else(|| format!("attribute {k} must be a JSON-encoded string"))?;
        serde_json::from_str::<Value>(text)
            .map_err(|_| format!("attribute {k} is not JSON-encoded"))?;
    }
    let rid = attrs.get("mlflow.traceRequestId").and_then(Value::as_str);
    if rid != Some(Value::String(trace_id.into()).to_string().as_str()) {
        return Err(format!(
            "attribute mlflow.traceRequestId must be the JSON string \"{trace_id}\""
        ));
    }
    if !o.get("events").is_none_or(Value::is_array) {
        return Err("events must be an array".into());
    }
    Ok(root)
}

fn b64_field(o: &Map<String, Value>, key: &str, len: usize) -> Result<Vec<u8>, String> {
    let s = o
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{key} must be a base64 string"))?;
    let b = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| format!("{key} is not base64"))?;
    if b.len() != len {
        return Err(format!("{key} must decode to {len} bytes, got {}", b.len()));
    }
    Ok(b)
}

pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks `POST .../traces/{trace_id}/assessments`: `{"assessment":{...}}`
/// naming the same trace, with a name, a source and a feedback or an
/// expectation. Returns the assessment.
pub fn assessment(body: &[u8], trace_id: &str) -> Result<Value, Reject> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let a = v
        .get("assessment")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing required field: assessment"))?;
    if a.get("trace_id").and_then(Value::as_str) != Some(trace_id) {
        return Err(bad("assessment.trace_id must match the trace in the path"));
    }
    a.get("assessment_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("missing required field: assessment.assessment_name"))?;
    let st = a
        .get("source")
        .and_then(|s| s.get("source_type"))
        .and_then(Value::as_str);
    if !matches!(st, Some("HUMAN" | "LLM_JUDGE" | "CODE")) {
        return Err(bad(
            "assessment.source.source_type must be HUMAN, LLM_JUDGE or CODE",
        ));
    }
    if a.contains_key("feedback") == a.contains_key("expectation") {
        return Err(bad(
            "assessment must have exactly one of feedback or expectation",
        ));
    }
    Ok(Value::Object(a.clone()))
}

/// Checks the v4 (Unity Catalog) `POST /api/4.0/mlflow/traces/{location}/{hex}/info`
/// body: the trace id is the bare hex, the location a UC schema matching the path.
pub fn v4_info(body: &[u8], location: &str, hex: &str) -> Result<Value, Reject> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let info = v
        .as_object()
        .ok_or_else(|| bad("body must be a trace info object"))?;
    if req_str(info, "trace_id")? != hex || !is_hex32(hex) {
        return Err(bad(
            "trace_id must be the 32-hex OpenTelemetry trace id of the path",
        ));
    }
    let uc = info
        .get("trace_location")
        .filter(|l| l.get("type").and_then(Value::as_str) == Some("UC_SCHEMA"))
        .and_then(|l| l.get("uc_schema"))
        .ok_or_else(|| bad("trace_location must be of type UC_SCHEMA with uc_schema"))?;
    let name = |k| uc.get(k).and_then(Value::as_str).unwrap_or("");
    if format!("{}.{}", name("catalog_name"), name("schema_name")) != location {
        return Err(bad(
            "trace_location.uc_schema does not match the location in the path",
        ));
    }
    common_info(info)?;
    Ok(v)
}

/// `catalog.schema.table`, each part non-empty.
pub fn is_uc_table_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations() {
        assert!(is_rfc3339("2026-12-01T13:18:29.105Z"));
        assert!(is_rfc3339("2026-12-01T13:18:29+02:00"));
        assert!(!is_rfc3339("2026-12-01 13:18:29Z"));
        assert!(!is_rfc3339("1796131109105"));
        assert!(is_proto_duration("0.064s"));
        assert!(is_proto_duration("3s"));
        assert!(!is_proto_duration("64ms"));
        assert!(!is_proto_duration("0.s"));
    }
}
