//! JSON text as Python's `json.dumps` writes it: `", "` and `": "`
//! separators, floats in `repr` form, and, with `ensure_ascii`, every
//! character outside printable ASCII escaped as `\uXXXX`. The MLflow client
//! serialises the span document and the trace-size statistics this way, so
//! sizes and bodies match what it would send for the same trace; autologging
//! writes a span's inputs and outputs this way (`ensure_ascii=False`), which
//! is how llmtap writes the ones it builds (a stream's rebuilt response).
//! Text to be re-rendered without a parse is `trace::pyjson`'s.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

/// `json.dumps(value, ensure_ascii=...)`.
pub fn dumps<T: Serialize + ?Sized>(value: &T, ensure_ascii: bool) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, PyFormatter { ensure_ascii });
    // Serialising plain JSON values into memory cannot fail.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// `len(json.dumps(value).encode())` — the byte length with ASCII escapes.
pub fn ascii_len<T: Serialize + ?Sized>(value: &T) -> usize {
    dumps(value, true).len()
}

/// An object whose keys keep their order (Python dicts do; `serde_json`'s
/// map here sorts them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ordered(pub Vec<(String, serde_json::Value)>);

impl Ordered {
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct PyFormatter {
    ensure_ascii: bool,
}

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(b) => return write!(w, "\\u{b:04x}"),
        };
        w.write_all(s)
    }
}

/// Python's `repr(float)` as `json.dumps` writes it (`1.0`, `1e+16`,
/// `1e-05`, `NaN`, `Infinity`).
pub fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if abs == 0.0 || (1e-4..1e16).contains(&abs) {
        let s = format!("{v}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    // Shortest digits, scientific: Rust writes `1.5e-7`, Python `1.5e-07`.
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_are_pythons() {
        let v = json!({"a": [1, 2], "b": {"c": "d"}});
        assert_eq!(dumps(&v, false), r#"{"a": [1, 2], "b": {"c": "d"}}"#);
    }

    #[test]
    fn ensure_ascii_escapes_like_python() {
        // json.dumps("é\x7f😀\n") == '"\\u00e9\\u007f\\ud83d\\ude00\\n"'
        assert_eq!(
            dumps(&json!("é\u{7f}😀\n"), true),
            r#""\u00e9\u007f\ud83d\ude00\n""#
        );
        // ensure_ascii=False keeps them (DEL included), escapes controls.
        assert_eq!(dumps(&json!("é\u{7f}\u{1}"), false), "\"é\u{7f}\\u0001\"");
        assert_eq!(ascii_len(&json!("é")), 8);
    }

    #[test]
    fn floats_in_repr_form() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.7, "0.7"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (123456.5, "123456.5"),
            (-2.0, "-2.0"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(float_repr(v), want, "{v}");
        }
        assert_eq!(dumps(&json!({"x": 0.5}), true), r#"{"x": 0.5}"#);
    }
}
