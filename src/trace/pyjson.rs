//! JSON text re-rendered the way Python renders the same value, keeping the
//! text's own key order (serde_json's `Value` would sort the keys).
//!
//! - [`repr`]: `repr(json.loads(text))` — what the Anthropic SDK puts in its
//!   exception message (`f"Error code: {status} - {body}"`).
//! - [`dumps`]: `json.dumps(json.loads(text), ensure_ascii=False)` — the
//!   separators (`", "`, `": "`) MLflow's autologging writes.
//!
//! Pure; input that is not valid JSON gives `None`.

/// How one rendering spells strings and literals.
struct Style {
    string: fn(&str, &mut String),
    true_: &'static str,
    false_: &'static str,
    null: &'static str,
}

/// `repr()` of the value the JSON text holds.
pub fn repr(text: &str) -> Option<String> {
    render(
        text,
        &Style {
            string: py_str_repr,
            true_: "True",
            false_: "False",
            null: "None",
        },
    )
}

/// `json.dumps(..., ensure_ascii=False)` of the value the JSON text holds.
pub fn dumps(text: &str) -> Option<String> {
    render(
        text,
        &Style {
            string: json_str,
            true_: "true",
            false_: "false",
            null: "null",
        },
    )
}

/// Walks valid JSON text token by token and re-emits it in `style`.
fn render(text: &str, style: &Style) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b',' => {
                out.push_str(", ");
                i += 1;
            }
            b':' => {
                out.push_str(": ");
                i += 1;
            }
            b'{' | b'}' | b'[' | b']' => {
                out.push(char::from(bytes[i]));
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i)?;
                let token = text.get(i..end)?;
                // Without escapes, the text between the quotes is the string.
                match token.get(1..token.len() - 1).filter(|s| !s.contains('\\')) {
                    Some(plain) => (style.string)(plain, &mut out),
                    None => {
                        let s: String = serde_json::from_str(token).ok()?;
                        (style.string)(&s, &mut out);
                    }
                }
                i = end;
            }
            b't' => {
                out.push_str(style.true_);
                i += 4;
            }
            b'f' => {
                out.push_str(style.false_);
                i += 5;
            }
            b'n' => {
                out.push_str(style.null);
                i += 4;
            }
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(text.get(i..end)?);
                i = end;
            }
        }
    }
    Some(out)
}

/// The index just past the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A string as `json.dumps(..., ensure_ascii=False)` writes it.
fn json_str(s: &str, out: &mut String) {
    // serde_json escapes exactly what Python does with ensure_ascii=False
    // (", \, and control characters; \u007f and non-ASCII kept), except that
    // Python writes control characters other than \b\f\n\r\t as \u00XX too.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// A string as Python's `repr()` writes it: single quotes unless the text
/// holds a single quote and no double quote; `\\`, `\t`, `\n`, `\r`, the
/// quote escaped; other control characters as `\xNN`.
fn py_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python_for_an_anthropic_error_body() {
        // Python: repr(json.loads(body)), as the Anthropic SDK prints it.
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CUJ5Kq9tLwYvB3mNcX8dF"}"#;
        assert_eq!(
            repr(body).unwrap(),
            "{'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'Number of request tokens has exceeded your per-minute rate limit'}, 'request_id': 'req_011CUJ5Kq9tLwYvB3mNcX8dF'}"
        );
    }

    #[test]
    fn repr_spells_literals_quotes_and_escapes_as_python() {
        let text = "{ \"a\" : [true, false, null, 1.5, -2],\n \"it's\": \"say \\\"hi\\\"\", \"b\": \"x\\ny\\\\\", \"c\": \"\\u0001\u{e9}\" }";
        // Checked with python3: repr(json.loads(text)).
        assert_eq!(
            repr(text).unwrap(),
            r#"{'a': [True, False, None, 1.5, -2], "it's": 'say "hi"', 'b': 'x\ny\\', 'c': '\x01é'}"#
        );
    }

    #[test]
    fn dumps_keeps_key_order_and_uses_python_separators() {
        let text = "{\"model\":\"gpt-4o-mini\",\"input\":\"Say hello\",\"n\":[1,{\"z\":null,\"a\":true}],\"u\":\"\u{e9}\"}";
        assert_eq!(
            dumps(text).unwrap(),
            r#"{"model": "gpt-4o-mini", "input": "Say hello", "n": [1, {"z": null, "a": true}], "u": "é"}"#
        );
    }

    #[test]
    fn invalid_json_is_none() {
        assert_eq!(repr("{\"a\":"), None);
        assert_eq!(dumps("overloaded"), None);
        assert_eq!(dumps(""), None);
    }
}
