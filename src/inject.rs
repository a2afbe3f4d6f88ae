//! Usage on every stream (pure functions): ask the provider for usage on an
//! OpenAI chat / completions stream the client requested without it, then
//! take the provider's extra output back out of what the client receives.
//!
//! Request side, [`add_include_usage`]: one member is inserted (or one nested
//! object replaced) in the JSON text; every other byte stays as the client
//! wrote it. Response side, [`UsageFilter`]: the stream is cut into SSE event
//! blocks at blank lines; the usage-only chunk (`"choices":[]` with a
//! `usage` object) is dropped and a trailing top-level `"usage":null` member
//! is removed from the other chunks, so the client gets the bytes it would
//! have got without the option. A block is forwarded as soon as its blank
//! line arrives; only a partial block is ever held back.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Returns the request body with `stream_options.include_usage = true` when
/// it is a JSON object with `"stream": true` that does not ask for usage;
/// `None` when nothing needs changing (or the body is not such JSON).
pub fn add_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let members: HashMap<String, &RawValue> = serde_json::from_slice(body).ok()?;
    if members.get("stream")?.get().trim() != "true" {
        return None;
    }
    match members.get("stream_options") {
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

/// Removes what `include_usage` added from an SSE stream; see the module docs.
#[derive(Debug, Default)]
pub struct UsageFilter {
    held: BytesMut,
    /// Usage-only chunks removed so far (normally 0 or 1).
    pub removed: usize,
}

impl UsageFilter {
    /// Takes the next network chunk; returns the bytes to forward now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = block_end(&self.held) {
            let block = self.held.split_to(end);
            self.emit(&block, &mut out);
        }
        out.freeze()
    }

    /// End of stream: whatever is held (a final block without its blank line).
    pub fn finish(&mut self) -> Bytes {
        let rest = self.held.split();
        let mut out = BytesMut::new();
        self.emit(&rest, &mut out);
        out.freeze()
    }

    fn emit(&mut self, block: &[u8], out: &mut BytesMut) {
        if !contains(block, b"\"usage\"") {
            out.extend_from_slice(block);
            return;
        }
        if is_usage_only(block) {
            self.removed += 1;
            return;
        }
        let mut rest = block;
        while !rest.is_empty() {
            let line_len = rest
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')
                .unwrap_or(rest.len());
            let (line, tail) = rest.split_at(line_len);
            write_line(line, out);
            let eol = match tail {
                [b'\r', b'\n', ..] => 2,
                [b'\r', ..] | [b'\n', ..] => 1,
                _ => 0,
            };
            out.extend_from_slice(&tail[..eol]);
            rest = &tail[eol..];
        }
    }
}

/// Length of the first complete event block (through its blank line), if any.
fn block_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = true;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\r' if i + 1 == buf.len() => return None, // may be half of a CRLF
            b'\r' if buf[i + 1] == b'\n' => 2,
            b'\r' | b'\n' => 1,
            _ => 0,
        };
        if eol == 0 {
            line_start = false;
            i += 1;
            continue;
        }
        if line_start && i > 0 {
            return Some(i + eol);
        }
        line_start = true;
        i += eol;
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The JSON of a block's `data:` lines.
fn block_data(block: &[u8]) -> String {
    let text = String::from_utf8_lossy(block);
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    data
}

fn is_usage_only(block: &[u8]) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(&block_data(block)) else {
        return false;
    };
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && v.get("usage").is_some_and(Value::is_object)
}

/// Writes `line`, turning `data: {...,"usage":null}` into `data: {...}`.
fn write_line(line: &[u8], out: &mut BytesMut) {
    match usage_null_member(line) {
        Some(cut) => {
            out.extend_from_slice(&line[..cut]);
            out.extend_from_slice(&line[line.len() - trailing_from_brace(line)..]);
        }
        None => out.extend_from_slice(line),
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &s[..n]
}

/// Bytes from the line's last `}` to its end.
fn trailing_from_brace(line: &[u8]) -> usize {
    line.len() - line.iter().rposition(|b| *b == b'}').unwrap_or(line.len())
}

/// Where a trailing top-level `,"usage":null` member starts, if the line
/// is a `data:` line ending in one. (The last `}` of the line closes the
/// top-level object, so the member right before it is top-level.)
fn usage_null_member(line: &[u8]) -> Option<usize> {
    if !line.starts_with(b"data:") {
        return None;
    }
    let inner = trim_end(line).strip_suffix(b"}")?;
    let rest = trim_end(inner).strip_suffix(b"null")?;
    let rest = trim_end(rest).strip_suffix(b":")?;
    let rest = trim_end(rest).strip_suffix(b"\"usage\"")?;
    let before = trim_end(rest).strip_suffix(b",")?;
    Some(before.len())
}

#[cfg(test)]
mod tests;
