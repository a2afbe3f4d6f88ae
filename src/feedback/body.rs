//! The body of `POST /llmtap/v1/feedback`, parsed and checked (pure): a
//! JSON object `{"trace_id", "name", "value", "comment", "user"}` becomes a
//! [`Record`], or an error message that names the field and says what was
//! expected.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sinks::Assessment;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// The assessment name when the body gives none.
pub const DEFAULT_NAME: &str = "user_feedback";
/// Who gave the feedback when the body names no `user`.
pub const ANONYMOUS: &str = "anonymous";
/// Longest `name` and `user`, in characters.
const MAX_LABEL_CHARS: usize = 256;
/// The fields a body may have.
const FIELDS: [&str; 5] = ["trace_id", "name", "value", "comment", "user"];

/// One accepted piece of feedback, as it is stored until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// MLflow's form: `tr-` + 32 lowercase hex digits.
    pub trace_id: String,
    pub name: String,
    /// A bool, number, string or object.
    pub value: Value,
    pub comment: Option<String>,
    pub user: Option<String>,
    /// When llmtap accepted it (unix ms).
    pub accepted_unix_ms: u64,
}

impl Record {
    /// The assessment sinks send (mlflow-wire.md §7): a `HUMAN` source
    /// named by `user` (else [`ANONYMOUS`]), the comment as its rationale.
    pub fn assessment(&self) -> Assessment {
        Assessment {
            trace_id: self.trace_id.clone(),
            name: self.name.clone(),
            source_type: "HUMAN".into(),
            source_id: self.user.clone().unwrap_or_else(|| ANONYMOUS.into()),
            value: self.value.clone(),
            rationale: self.comment.clone(),
            metadata: Default::default(),
        }
    }
}

/// Whether a `Content-Type` may carry the body: JSON, or none at all.
pub fn json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses and checks a body; the error is a message for the client.
pub fn parse(body: &[u8], accepted_unix_ms: u64) -> Result<Record, String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes: feedback is a small JSON object"
        ));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut o) = v else {
        return Err("the body must be a JSON object: {\"trace_id\": ..., \"value\": ...}".into());
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {k:?}: the fields are {}",
            FIELDS.join(", ")
        ));
    }
    let trace_id = match o.remove("trace_id") {
        Some(Value::String(s)) => trace_id(&s)?,
        None | Some(Value::Null) => {
            return Err(
                "trace_id is required: the x-llmtap-trace-id header of the call's response".into(),
            )
        }
        Some(_) => return Err("trace_id must be a string".into()),
    };
    let value = match o.remove("value") {
        None | Some(Value::Null) => {
            return Err("value is required: a bool, number, string or object".into())
        }
        Some(Value::Array(_)) => {
            return Err("value must be a bool, number, string or object, not an array".into())
        }
        Some(v) => v,
    };
    let name = label(&mut o, "name")?.unwrap_or_else(|| DEFAULT_NAME.into());
    let user = label(&mut o, "user")?;
    let comment = text(&mut o, "comment")?;
    Ok(Record {
        trace_id,
        name,
        value,
        comment,
        user,
        accepted_unix_ms,
    })
}

/// A trace id as the client has it — `tr-` + 32 hex digits (the
/// `x-llmtap-trace-id` header, MLflow's id) or the 32 hex digits alone (an
/// OpenTelemetry trace id) — in MLflow's form.
pub fn trace_id(s: &str) -> Result<String, String> {
    let t = s.trim();
    let hex = t.strip_prefix("tr-").unwrap_or(t);
    if t.is_empty() {
        return Err(
            "trace_id is empty: send the x-llmtap-trace-id header of the call's response".into(),
        );
    }
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = t.chars().take(80).collect();
        return Err(format!(
            "trace_id {shown:?} is not a trace id: expected tr- followed by 32 hex digits (the x-llmtap-trace-id response header)"
        ));
    }
    Ok(format!("tr-{}", hex.to_ascii_lowercase()))
}

/// An optional string field.
fn text(o: &mut Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match o.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// An optional short, non-blank string field.
fn label(o: &mut Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    let Some(s) = text(o, field)? else {
        return Ok(None);
    };
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(format!("{field} is empty: leave it out or give a value"));
    }
    if s.chars().count() > MAX_LABEL_CHARS {
        return Err(format!(
            "{field} is longer than {MAX_LABEL_CHARS} characters"
        ));
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "tr-0123456789abcdef0123456789abcdef";

    fn ok(body: Value) -> Record {
        parse(body.to_string().as_bytes(), 7).unwrap()
    }

    fn err(body: &[u8]) -> String {
        parse(body, 7).unwrap_err()
    }

    #[test]
    fn a_full_body_becomes_a_record_and_an_assessment() {
        let r = ok(
            json!({"trace_id": ID, "name": "thumbs", "value": {"score": 4},
            "comment": "good", "user": "alice"}),
        );
        assert_eq!(r.trace_id, ID);
        assert_eq!(r.accepted_unix_ms, 7);
        let a = r.assessment();
        assert_eq!(a.name, "thumbs");
        assert_eq!(a.source_type, "HUMAN");
        assert_eq!(a.source_id, "alice");
        assert_eq!(a.value, json!({"score": 4}));
        assert_eq!(a.rationale.as_deref(), Some("good"));
    }

    #[test]
    fn defaults_and_every_value_type() {
        for v in [json!(true), json!(0.5), json!(-3), json!("meh"), json!({})] {
            let r = ok(json!({"trace_id": ID, "value": v}));
            assert_eq!(r.value, v);
            assert_eq!(r.name, DEFAULT_NAME);
            assert_eq!(r.assessment().source_id, ANONYMOUS);
            assert_eq!(r.comment, None);
        }
    }

    #[test]
    fn trace_ids_as_clients_have_them() {
        assert_eq!(trace_id(ID).unwrap(), ID);
        assert_eq!(
            trace_id(&ID.to_uppercase().replace("TR-", "tr-")).unwrap(),
            ID
        );
        assert_eq!(trace_id(&ID[3..]).unwrap(), ID);
        assert_eq!(trace_id(&format!(" {ID} ")).unwrap(), ID);
        for bad in [
            "",
            "tr-",
            "tr-123",
            "tr-0123456789abcdef0123456789abcdeg",
            "../etc",
        ] {
            assert!(trace_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(err(b"{not json").contains("not JSON"));
        assert!(err(b"[1]").contains("JSON object"));
        assert!(err(br#"{"value": true}"#).contains("trace_id is required"));
        assert!(err(br#"{"trace_id": "", "value": true}"#).contains("empty"));
        assert!(err(br#"{"trace_id": 5, "value": true}"#).contains("must be a string"));
        let no_value = format!(r#"{{"trace_id": "{ID}"}}"#);
        assert!(err(no_value.as_bytes()).contains("value is required"));
        let array = format!(r#"{{"trace_id": "{ID}", "value": [1]}}"#);
        assert!(err(array.as_bytes()).contains("not an array"));
        let null = format!(r#"{{"trace_id": "{ID}", "value": null}}"#);
        assert!(err(null.as_bytes()).contains("value is required"));
        let comment = format!(r#"{{"trace_id": "{ID}", "value": 1, "comment": 2}}"#);
        assert!(err(comment.as_bytes()).contains("comment must be a string"));
        let name = format!(r#"{{"trace_id": "{ID}", "value": 1, "name": " "}}"#);
        assert!(err(name.as_bytes()).contains("name is empty"));
        let typo = format!(r#"{{"trace_id": "{ID}", "value": 1, "rationale": "x"}}"#);
        assert!(err(typo.as_bytes()).contains("unknown field \"rationale\""));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(err(&big).contains("larger than"));
    }

    #[test]
    fn content_types() {
        assert!(json_content_type(None));
        assert!(json_content_type(Some("application/json; charset=utf-8")));
        assert!(json_content_type(Some("Application/JSON")));
        assert!(!json_content_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!json_content_type(Some("text/plain")));
    }

    #[test]
    fn a_record_survives_its_stored_form() {
        let r = ok(json!({"trace_id": ID, "value": "x", "user": "bob"}));
        let back: Record = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
