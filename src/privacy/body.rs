//! One captured body rewritten for privacy: decoded (a compressed copy is
//! stored decoded), then, by its shape — an event stream
//! ([`super::stream`]), JSON ([`super::json`]) or anything else — redacted
//! or reduced to its metadata.
//!
//! Fails closed: a body that cannot be decoded, or that is neither JSON
//! nor a stream in the `metadata` mode, is dropped (kept empty) rather than
//! kept as it came.

use std::borrow::Cow;

use super::json::json_escaped;
pub use super::Op;
use super::{json, stream};

/// Decoded bodies are cut at this many bytes (a decompression bomb guard).
pub const DECODE_LIMIT: usize = 64 << 20;

/// A rewritten body.
#[derive(Debug, Default, PartialEq)]
pub struct Rewritten {
    pub bytes: Vec<u8>,
    /// The input was compressed; `bytes` are decoded.
    pub decoded: bool,
    /// For an event stream read as it came (not decoded): each kept event's
    /// end offset in the input, and in `bytes` (to carry arrival times over).
    pub events: Option<Vec<(usize, usize)>>,
    /// Matches replaced.
    pub redactions: usize,
}

/// Rewrites `data` (a body with these headers) for `op`.
pub fn rewrite(
    data: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    op: Op<'_>,
) -> Rewritten {
    let identity = content_encoding.is_none_or(|e| {
        e.split(',')
            .all(|t| t.trim().is_empty() || t.trim().eq_ignore_ascii_case("identity"))
    });
    let decoded: Cow<'_, [u8]> = match identity {
        true => Cow::Borrowed(data),
        false => match crate::parse::decode::decode_body(content_encoding, data, DECODE_LIMIT) {
            Ok((d, _)) => Cow::Owned(d),
            Err(_) => {
                return Rewritten {
                    decoded: true,
                    ..Rewritten::default()
                }
            }
        },
    };
    let mut out = match () {
        _ if is_stream(content_type, &decoded) => {
            let s = stream::rewrite(&decoded, op);
            Rewritten {
                bytes: s.bytes,
                events: identity.then_some(s.events),
                redactions: s.redactions,
                decoded: false,
            }
        }
        _ => match serde_json::from_slice::<serde_json::Value>(&decoded) {
            Ok(mut v) => {
                let mut redactions = 0;
                if let Op::Reduce(_) = op {
                    json::reduce(&mut v);
                }
                if let Some(r) = op.redactor() {
                    redactions = json::redact(&mut v, r);
                }
                Rewritten {
                    bytes: serde_json::to_vec(&v).unwrap_or_default(),
                    redactions,
                    ..Rewritten::default()
                }
            }
            Err(_) => raw(&decoded, op),
        },
    };
    out.decoded = !identity;
    out
}

/// A body that is not JSON (or JSON cut at the capture cap): dropped in the
/// `metadata` mode, redacted as text otherwise, each replacement escaped as
/// inside a JSON string (a cut JSON body stays readable as far as it goes).
fn raw(data: &[u8], op: Op<'_>) -> Rewritten {
    let Op::Redact(r) = op else {
        return Rewritten::default();
    };
    let text = String::from_utf8_lossy(data);
    match r.redact_counted(&text, json_escaped) {
        Some((s, redactions)) => Rewritten {
            bytes: s.into_bytes(),
            redactions,
            ..Rewritten::default()
        },
        None => Rewritten {
            bytes: text.into_owned().into_bytes(),
            ..Rewritten::default()
        },
    }
}

/// An event stream: by its content type, or (none given) by its first line.
fn is_stream(content_type: Option<&str>, data: &[u8]) -> bool {
    match content_type {
        Some(ct) => ct.to_ascii_lowercase().contains("text/event-stream"),
        None => {
            let head = data.trim_ascii_start();
            head.starts_with(b"data:") || head.starts_with(b"event:")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::Redactor;
    use std::io::Write;

    fn email() -> Redactor {
        Redactor::new(&["email".into()], &[]).unwrap()
    }

    #[test]
    fn a_json_body_is_redacted_inside_its_strings() {
        let r = email();
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"mail bob@example.com"}]}"#;
        let out = rewrite(body, Some("application/json"), None, Op::Redact(&r));
        assert_eq!(out.redactions, 1);
        let v: serde_json::Value = serde_json::from_slice(&out.bytes).unwrap();
        assert_eq!(v["messages"][0]["content"], "mail [REDACTED:email]");
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn a_cut_json_body_is_redacted_as_text_with_escaped_replacements() {
        let r = Redactor::new(
            &[],
            &[super::super::redact::RuleSpec {
                name: "r".into(),
                pattern: "bob@example.com".into(),
                replacement: "\"x\"".into(),
            }],
        )
        .unwrap();
        let body = br#"{"messages":[{"content":"mail bob@example.com and mo"#;
        let out = rewrite(body, Some("application/json"), None, Op::Redact(&r));
        assert_eq!(
            String::from_utf8(out.bytes).unwrap(),
            r#"{"messages":[{"content":"mail \"x\" and mo"#
        );
    }

    #[test]
    fn metadata_drops_what_is_not_json() {
        let out = rewrite(
            b"plain secret text",
            Some("text/plain"),
            None,
            Op::Reduce(None),
        );
        assert!(out.bytes.is_empty());
        let body = br#"{"model":"m","input":"secret"}"#;
        let out = rewrite(body, None, None, Op::Reduce(None));
        let v: serde_json::Value = serde_json::from_slice(&out.bytes).unwrap();
        assert_eq!(v, serde_json::json!({"model": "m", "input": ""}));
    }

    #[test]
    fn a_compressed_body_is_stored_decoded_and_an_undecodable_one_dropped() {
        let r = email();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(br#"{"content":"to bob@example.com"}"#)
            .unwrap();
        let zipped = gz.finish().unwrap();
        let out = rewrite(
            &zipped,
            Some("application/json"),
            Some("gzip"),
            Op::Redact(&r),
        );
        assert!(out.decoded);
        assert_eq!(out.bytes, br#"{"content":"to [REDACTED:email]"}"#.to_vec());
        let out = rewrite(b"bob@example.com", None, Some("gzip"), Op::Redact(&r));
        assert!(out.decoded && out.bytes.is_empty());
        let out = rewrite(b"bob@example.com", None, Some("x-unknown"), Op::Redact(&r));
        assert!(out.decoded && out.bytes.is_empty());
    }
}
