//! Usage on every stream (pure functions): ask the provider for usage on an
//! OpenAI chat / completions stream the client requested without it, then
//! take the provider's extra output back out of what the client receives.
//!
//! Request side, [`add_include_usage`]: one member is inserted (or one nested
//! object replaced) in the JSON text; every other byte stays as the client
//! wrote it. Response side, [`UsageFilter`] (in `filter.rs`): the usage-only
//! chunk is dropped and trailing `"usage":null` members removed, so the
//! client gets the bytes it would have got without the option.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

mod filter;

pub use filter::{UsageFilter, MAX_HELD_EVENT};

const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// The two members the rewrite looks at, as written (`null` included); the
/// rest of the object is checked and skipped without being kept. A body
/// naming either twice is not an object this rewrite touches.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
}

/// A member that is there, whatever its value (`null` is not absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Returns the request body with `stream_options.include_usage = true` when
/// it is a JSON object with `"stream": true` that does not ask for usage;
/// `None` when nothing needs changing (or the body is not such JSON).
pub fn add_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let members: Members = serde_json::from_slice(body).ok()?;
    if members.stream?.get().trim() != "true" {
        return None;
    }
    match members.stream_options {
        None => {
            let open = body.iter().position(|b| *b == b'{')?;
            let mut out = Vec::with_capacity(body.len() + MEMBER.len());
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(MEMBER);
            out.extend_from_slice(&body[open + 1..]);
            Some(out)
        }
        Some(raw) => {
            let mut options: Value = serde_json::from_str(raw.get()).ok()?;
            if options.get("include_usage") == Some(&Value::Bool(true)) {
                return None;
            }
            if options.is_null() {
                options = Value::Object(Default::default());
            }
            options
                .as_object_mut()?
                .insert("include_usage".into(), Value::Bool(true));
            // The raw value borrows from `body`: its offset is a pointer difference.
            let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
            let end = start + raw.get().len();
            let mut out = Vec::with_capacity(body.len() + 24);
            out.extend_from_slice(body.get(..start)?);
            out.extend_from_slice(options.to_string().as_bytes());
            out.extend_from_slice(body.get(end..)?);
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests;
