//! The `~/.databrickscfg` format as Python's `configparser` reads it (the
//! Databricks SDK's parser): `[section]` headers, `key = value` or
//! `key: value` lines (keys lower-cased, values trimmed), `#` / `;` comment
//! lines, indented continuation lines appended with a newline, and the
//! `[DEFAULT]` section kept apart (the SDK does not merge it into other
//! profiles). Pure; errors name the line number, never its text (a line may
//! hold a secret).

/// A parsed file: sections in file order, each a list of `(key, value)`.
#[derive(Debug, Default, PartialEq)]
pub struct Ini {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    /// The section named `name` (case-sensitive, as configparser).
    pub fn section(&self, name: &str) -> Option<&[(String, String)]> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kv)| kv.as_slice())
    }

    /// `key` in section `name`.
    pub fn get(&self, name: &str, key: &str) -> Option<&str> {
        self.section(name)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the file text.
pub fn parse(text: &str) -> Result<Ini, String> {
    let mut ini = Ini::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let last = ini
                .sections
                .last_mut()
                .and_then(|(_, kv)| kv.last_mut())
                .ok_or_else(|| format!("line {n}: continuation line without a key before it"))?;
            last.1.push('\n');
            last.1.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {n}: section header without a closing ']'"))?;
            if ini.sections.iter().any(|(s, _)| s == name) {
                return Err(format!("line {n}: section [{name}] appears twice"));
            }
            ini.sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let (key, value) =
            split_key_value(trimmed).ok_or_else(|| format!("line {n}: expected `key = value`"))?;
        let (_, kv) = ini
            .sections
            .last_mut()
            .ok_or_else(|| format!("line {n}: a setting before any [section] header"))?;
        let key = key.to_ascii_lowercase();
        if kv.iter().any(|(k, _)| *k == key) {
            return Err(format!("line {n}: `{key}` set twice in one section"));
        }
        kv.push((key, value.to_string()));
    }
    Ok(ini)
}

/// Splits at the first `=` or `:` (configparser's default delimiters).
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim();
    if key.is_empty() {
        return None;
    }
    Some((key, line[at + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let ini = parse(
            "# a comment\n[DEFAULT]\nhost = https://a.example\n\n[dev]\nHost: https://b.example\n; note\ntoken = dapi-x\nmulti = one\n  two\n",
        )
        .unwrap();
        assert_eq!(ini.get("DEFAULT", "host"), Some("https://a.example"));
        assert_eq!(ini.get("dev", "host"), Some("https://b.example"));
        assert_eq!(ini.get("dev", "token"), Some("dapi-x"));
        assert_eq!(ini.get("dev", "multi"), Some("one\ntwo"));
        assert_eq!(ini.get("dev", "missing"), None);
        assert!(ini.section("prod").is_none());
    }

    #[test]
    fn errors_name_the_line_but_not_its_text() {
        let e = parse("token = dapi-secret\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        assert!(!e.contains("dapi-secret"));
        let e = parse("[a]\njust-a-secret-word\n").unwrap_err();
        assert!(
            e.starts_with("line 2:") && !e.contains("secret-word"),
            "{e}"
        );
        assert!(parse("[a\n").unwrap_err().contains("line 1"));
        assert!(parse("[a]\n[a]\n").is_err());
        assert!(parse("[a]\nk=1\nk=2\n").is_err());
    }
}
