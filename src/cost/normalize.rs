//! Model-id normalisation: the names a price may be listed under.
//!
//! A request names its model many ways: `gpt-4o-2024-08-06` (OpenAI dated
//! snapshot), `claude-3-5-sonnet-20241022` / `claude-3-5-sonnet-latest`
//! (Anthropic), `claude-3-5-sonnet-v2@20241022` (Vertex), `openai/gpt-4o`,
//! `anthropic/...`, `models/gemini-2.5-pro` (Gemini's own prefix),
//! `databricks-gpt-5-1` (a Databricks serving endpoint), any case.
//! [`candidates`] lists the keys to try, most specific first, so a dated id
//! that has its own price (`gpt-4o-2024-05-13`) keeps it and any other dated
//! id falls back to its base model. Pure string work, no table access.

/// The lookup keys for `model`, most specific first, without duplicates.
pub fn candidates(model: &str) -> Vec<String> {
    let base = strip_prefix(&model.trim().to_ascii_lowercase());
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    };
    for name in [
        base.clone(),
        base.strip_prefix("databricks-").unwrap_or("").to_string(),
    ] {
        if name.is_empty() {
            continue;
        }
        let undated = strip_date(&name);
        for n in [name.clone(), undated] {
            push(n.clone());
            // Databricks endpoints spell versions with dashes (`gpt-5-1`,
            // `gemini-2-5-pro`); other routers spell Claude's with dots.
            push(digits_joined(&n, '-', '.'));
            push(digits_joined(&n, '.', '-'));
        }
    }
    out
}

/// The base-model key of a table entry: lowercase, no prefix, no date
/// (`claude-3-5-sonnet-20241022` -> `claude-3-5-sonnet`).
pub fn undated(model: &str) -> String {
    strip_date(&strip_prefix(&model.trim().to_ascii_lowercase()))
}

/// Drops `provider/` prefixes (`openai/`, `anthropic/`, `models/`,
/// `databricks/`, `openrouter/anthropic/`): the model is the last segment.
fn strip_prefix(model: &str) -> String {
    model.rsplit('/').next().unwrap_or(model).to_string()
}

/// Removes a trailing date or alias: `-2024-08-06`, `-20241022`,
/// `@20241022`, `-latest`, a Vertex `-v2`, Gemini's `-001` revisions, and
/// the `-0` of Anthropic's `claude-sonnet-4-0`.
fn strip_date(name: &str) -> String {
    let mut s = name.split('@').next().unwrap_or(name).to_string();
    loop {
        let before = s.len();
        for suffix in ["-latest", "-v1", "-v2", "-001", "-002"] {
            if let Some(rest) = s.strip_suffix(suffix) {
                s = rest.to_string();
            }
        }
        s = strip_numeric_date(&s);
        // Anthropic's `claude-sonnet-4-0` / `claude-opus-4-0` aliases.
        if let Some(rest) = s.strip_suffix("-0") {
            if rest.ends_with(|c: char| c.is_ascii_digit()) && rest.len() >= 2 {
                let b = rest.as_bytes();
                if b[b.len() - 2] == b'-' {
                    s = rest.to_string();
                }
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

/// `-YYYYMMDD` or `-YYYY-MM-DD` at the end.
fn strip_numeric_date(s: &str) -> String {
    let b = s.as_bytes();
    let all_digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let n = b.len();
    if n > 9 && b[n - 9] == b'-' && all_digits(n - 8..n) && b[n - 8] == b'2' {
        return s[..n - 9].to_string();
    }
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && all_digits(n - 10..n - 6)
        && all_digits(n - 5..n - 3)
        && all_digits(n - 2..n)
    {
        return s[..n - 11].to_string();
    }
    s.to_string()
}

/// `from` between two single digits becomes `to` (`gpt-5-1` -> `gpt-5.1`).
/// Only single-digit runs on both sides, so `llama-3-70b` is left alone.
fn digits_joined(s: &str, from: char, to: char) -> String {
    let c: Vec<char> = s.chars().collect();
    let single_digit = |i: usize| {
        c.get(i).is_some_and(char::is_ascii_digit)
            && !(i > 0 && c.get(i - 1).is_some_and(char::is_ascii_digit))
            && !c.get(i + 1).is_some_and(char::is_ascii_digit)
    };
    let mut out = String::with_capacity(s.len());
    for (i, ch) in c.iter().enumerate() {
        let joins = *ch == from && i > 0 && single_digit(i - 1) && single_digit(i + 1);
        out.push(if joins { to } else { *ch });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(model: &str, key: &str) -> bool {
        candidates(model).iter().any(|c| c == key)
    }

    #[test]
    fn dated_ids_keep_their_own_name_first() {
        let c = candidates("gpt-4o-2024-08-06");
        assert_eq!(c[0], "gpt-4o-2024-08-06");
        assert!(c.contains(&"gpt-4o".to_string()));
        assert!(has("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"));
        assert!(has("claude-3-5-sonnet-latest", "claude-3-5-sonnet"));
        assert!(has("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"));
        assert!(has("gemini-2.0-flash-001", "gemini-2.0-flash"));
        assert!(has("o3-mini-2025-01-31", "o3-mini"));
        assert!(has("claude-opus-4-0", "claude-opus-4"));
        assert!(!has("gpt-4-0613", "gpt-4"));
    }

    #[test]
    fn prefixes_and_case() {
        assert_eq!(candidates("OpenAI/GPT-4o")[0], "gpt-4o");
        assert_eq!(
            candidates("anthropic/claude-opus-4-5")[0],
            "claude-opus-4-5"
        );
        assert_eq!(candidates("models/gemini-2.5-pro")[0], "gemini-2.5-pro");
        assert_eq!(candidates("  gpt-4.1-mini ")[0], "gpt-4.1-mini");
    }

    #[test]
    fn databricks_endpoints_and_version_spellings() {
        let c = candidates("databricks-gpt-5-1");
        assert_eq!(c[0], "databricks-gpt-5-1");
        assert!(c.contains(&"gpt-5.1".to_string()));
        assert!(has("databricks-gemini-2-5-pro", "gemini-2.5-pro"));
        assert!(has("databricks-claude-sonnet-4-5", "claude-sonnet-4-5"));
        assert!(has("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"));
        // Multi-digit runs are not versions.
        assert!(!has(
            "databricks-meta-llama-3-3-70b-instruct",
            "meta-llama-3.3.70b-instruct"
        ));
    }

    #[test]
    fn non_dates_are_kept() {
        assert_eq!(strip_date("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(strip_date("o1"), "o1");
        assert_eq!(
            strip_date("text-embedding-3-small"),
            "text-embedding-3-small"
        );
        assert_eq!(strip_date("model-12345678"), "model-12345678");
        assert!(candidates("").is_empty());
    }
}
