//! JSON text re-rendered the way Python renders the same value, keeping the
//! text's own key order (serde_json's `Value` would sort the keys).
//!
//! - [`repr`]: `repr(json.loads(text))` — what the Anthropic SDK puts in its
//!   exception message (`f"Error code: {status} - {body}"`).
//! - [`dumps`]: `json.dumps(json.loads(text), ensure_ascii=False)` — the
//!   separators (`", "`, `": "`) MLflow's autologging writes;
//!   [`dumps_parsed`] the same for text serde_json has read already.
//!
//! Pure; input that is not valid JSON gives `None`. A value (not text) is
//! [`crate::pydumps`]'s.

/// How one rendering spells strings and literals.
struct Style {
    string: fn(&str, &mut String),
    /// A string token escaped as serde_json escapes is written as it is.
    keeps_canonical: bool,
    /// A number with a fraction or an exponent (a Python float).
    float: fn(f64) -> String,
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
            keeps_canonical: false,
            float: |v| match crate::pydumps::float_repr(v).as_str() {
                "Infinity" => "inf".into(),
                "-Infinity" => "-inf".into(),
                s => s.into(),
            },
            true_: "True",
            false_: "False",
            null: "None",
        },
    )
}

const DUMPS: Style = Style {
    string: json_str,
    keeps_canonical: true,
    float: crate::pydumps::float_repr,
    true_: "true",
    false_: "false",
    null: "null",
};

/// `json.dumps(..., ensure_ascii=False)` of the value the JSON text holds.
pub fn dumps(text: &str) -> Option<String> {
    render(text, &DUMPS)
}

/// [`dumps`] of text that serde_json has parsed, as it is, without error:
/// not checked again. Text that is not JSON after all gives garbage or
/// `None`, never a panic or a hang.
pub fn dumps_parsed(text: &str) -> Option<String> {
    walk(text, &DUMPS)
}

/// Checks that `text` is JSON, then re-emits it in `style`.
fn render(text: &str, style: &Style) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    walk(text, style)
}

/// Walks JSON text token by token and re-emits it in `style`; every step
/// moves on, so text that is not JSON ends the walk (`None` where no token
/// starts).
fn walk(text: &str, style: &Style) -> Option<String> {
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
                    // In JSON it holds no quote and no control character.
                    Some(_) if style.keeps_canonical => out.push_str(token),
                    Some(plain) => (style.string)(plain, &mut out),
                    None if style.keeps_canonical && canonical(token.as_bytes()) => {
                        out.push_str(token)
                    }
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
                if end == i {
                    return None; // no JSON token starts here
                }
                number(text.get(i..end)?, style, &mut out);
                i = end;
            }
        }
    }
    Some(out)
}

/// A number as Python writes what `json.loads` made of it: an int as
/// written (`-0` is `0`), a float in `repr` form (`1.50` is `1.5`, `1E5` is
/// `100000.0`, `2.5e-7` is `2.5e-07`, `1e400` is infinite).
fn number(token: &str, style: &Style, out: &mut String) {
    if !token.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        out.push_str(if token == "-0" { "0" } else { token });
        return;
    }
    match token.parse::<f64>() {
        Ok(v) => out.push_str(&(style.float)(v)),
        Err(_) => out.push_str(token),
    }
}

/// The index just past the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        match bytes[i] {
            b'\\' => i += 2,
            _ => return Some(i + 1),
        }
    }
    None
}

/// Whether a string token (quotes included) is spelled as serde_json (and
/// so Python, `ensure_ascii=False`) writes its value: escapes only `\"`,
/// `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00xx` (lowercase) for the
/// other control characters; no raw control character.
fn canonical(token: &[u8]) -> bool {
    let inner = &token[1..token.len().saturating_sub(1).max(1)];
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => match inner.get(i + 1) {
                Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let Some(&[b'0', b'0', hi, lo]) = inner.get(i + 2..i + 6) else {
                        return false;
                    };
                    let lower_hex = |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
                    let short = matches!((hi, lo), (b'0', b'8' | b'9' | b'a' | b'c' | b'd'));
                    if !matches!(hi, b'0' | b'1') || !lower_hex(lo) || short {
                        return false;
                    }
                    i += 6;
                }
                _ => return false,
            },
            c if c < 0x20 => return false,
            _ => i += 1,
        }
    }
    true
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

    /// Each checked with python3: json.dumps(json.loads(t), ensure_ascii=False).
    const SPELLINGS: [(&str, &str); 8] = [
        (r#"["caf\u00e9"]"#, r#"["café"]"#),
        (r#"["a\/b"]"#, r#"["a/b"]"#),
        (r#"["\u0008\u0009\u000a\u000c\u000d"]"#, r#"["\b\t\n\f\r"]"#),
        (r#"["\u001F\u0001"]"#, r#"["\u001f\u0001"]"#),
        (r#"["\u007f\u0022\u005c"]"#, "[\"\u{7f}\\\"\\\\\"]"),
        (r#"["\ud83d\ude00"]"#, "[\"\u{1f600}\"]"),
        (
            r#"{"k\n": "say \"hi\"\\ \b\f\r\t\u0000"}"#,
            r#"{"k\n": "say \"hi\"\\ \b\f\r\t\u0000"}"#,
        ),
        (
            r#"{"a":[1,-2.5e-3,true,false,null,{}],"b":[]}"#,
            r#"{"a": [1, -0.0025, true, false, null, {}], "b": []}"#,
        ),
    ];

    #[test]
    fn escapes_are_spelled_as_python_spells_them() {
        for (text, want) in SPELLINGS {
            assert_eq!(dumps(text).as_deref(), Some(want), "{text}");
            assert_eq!(dumps_parsed(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn numbers_are_spelled_as_python_spells_them() {
        let text =
            "[1.0, 1.50, 1E5, -0, 1e400, 2.5e-7, 12345678901234567890, 0.1, -0.0, 1e16, 123.456e2]";
        // python3: json.dumps(json.loads(text)) and repr(json.loads(text)).
        let spelled = "1.0, 1.5, 100000.0, 0, {inf}, 2.5e-07, 12345678901234567890, 0.1, -0.0, 1e+16, 12345.6";
        let want = |inf: &str| format!("[{}]", spelled.replace("{inf}", inf));
        assert_eq!(dumps(text), Some(want("Infinity")));
        assert_eq!(repr(text), Some(want("inf")));
    }

    #[test]
    fn a_canonical_string_token_is_kept_as_it_is() {
        for t in [r#""a\nb""#, r#""\u001f\"\\""#, r#""\b\f\r\t""#] {
            assert!(canonical(t.as_bytes()), "{t}");
        }
        for t in [
            r#""\u00e9""#,
            r#""\/""#,
            r#""\u000a""#,
            r#""\u001F""#,
            "\"\u{1}\"",
        ] {
            assert!(!canonical(t.as_bytes()), "{t}");
        }
    }

    /// What `dumps_parsed` is handed is JSON serde_json read; were it not,
    /// the walk still ends, without a panic.
    #[test]
    fn text_that_is_not_json_ends_the_walk() {
        for t in [
            "\u{feff}{\"a\":1}",
            "{\"a\":\u{e9}}",
            "\"open",
            "tru",
            "{\"a\":[1,",
            "\\\\\"",
            "\u{1}",
        ] {
            let _ = dumps_parsed(t);
            assert_eq!(dumps(t), None, "{t:?}");
        }
        assert_eq!(dumps_parsed("\u{feff}{}"), None, "a BOM starts no token");
    }

    #[test]
    fn invalid_json_is_none() {
        assert_eq!(repr("{\"a\":"), None);
        assert_eq!(dumps("overloaded"), None);
        assert_eq!(dumps(""), None);
    }
}
