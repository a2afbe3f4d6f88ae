//! `[[routes]]`: requests whose path starts with a prefix (and/or whose Host
//! matches) go to another upstream, with the prefix stripped or kept.
//!
//! ```toml
//! [[routes]]
//! prefix = "/anthropic"
//! upstream = "https://api.anthropic.com"
//! strip_prefix = true
//! credential = "env:ANTHROPIC_API_KEY"   # optional: see [`super::credential`]
//! ```

use http::Uri;

use super::credential::{self, CredentialConfig};
use super::layers::{parse_base_url, Env};

/// One route to a non-default upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Path prefix at a segment boundary (`/anthropic` matches `/anthropic/v1/messages`).
    pub prefix: Option<String>,
    /// Host header to match (without port, case-insensitive).
    pub host: Option<String>,
    pub upstream: Uri,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// The credential llmtap adds to this route's requests, if any.
    pub credential: Option<CredentialConfig>,
}

// `capture` is read by `super::privacy` (the route's capture mode).
const KEYS: [&str; 5] = ["prefix", "host", "upstream", "strip_prefix", "capture"];

/// Reads `[[routes]]` from the file, reporting every bad field; `env` is
/// where `env:` credentials are read.
pub(super) fn parse(file: &toml::Table, env: &Env, errors: &mut Vec<String>) -> Vec<RouteConfig> {
    let Some(value) = file.get("routes") else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.push("routes: expected an array of tables ([[routes]])".into());
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("routes[{i}]");
        let Some(t) = item.as_table() else {
            errors.push(format!("{at}: expected a table"));
            continue;
        };
        let known =
            |k: &String| KEYS.contains(&k.as_str()) || credential::KEYS.contains(&k.as_str());
        for key in t.keys().filter(|k| !known(k)) {
            errors.push(format!("{at}.{key}: unknown key"));
        }
        let text = |key: &str, errors: &mut Vec<String>| match t.get(key) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(v) => {
                errors.push(format!(
                    "{at}.{key}: expected a string, got {}",
                    v.type_str()
                ));
                None
            }
        };
        let prefix = text("prefix", errors).map(|p| {
            let p = p.trim_end_matches('/');
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            }
        });
        let host = text("host", errors).map(|h| h.to_ascii_lowercase());
        if prefix.is_none() && host.is_none() {
            errors.push(format!("{at}: needs a prefix, a host, or both"));
        }
        let upstream = match text("upstream", errors).map(|u| parse_base_url(&u)) {
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                errors.push(format!("{at}.upstream: {e}"));
                None
            }
            None => {
                errors.push(format!("{at}.upstream: missing"));
                None
            }
        };
        let strip_prefix = match t.get("strip_prefix") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(v) => {
                errors.push(format!(
                    "{at}.strip_prefix: expected true or false, got {}",
                    v.type_str()
                ));
                false
            }
        };
        let credential = credential::Raw::from_table(&at, t, errors).resolve(env, errors);
        if let (Some(c), Some(u)) = (&credential, &upstream) {
            credential::check_upstream(&at, c, u, errors);
        }
        if let Some(upstream) = upstream {
            out.push(RouteConfig {
                prefix,
                host,
                upstream,
                strip_prefix,
                credential,
            });
        }
    }
    out
}

/// Picks the route for a request: the longest matching prefix wins, a route
/// naming the Host beats one that does not. Returns the route's index and
/// the path to forward. `None` means the default upstream, path unchanged.
pub fn select<'a>(
    routes: &[RouteConfig],
    host: Option<&str>,
    path: &'a str,
) -> Option<(usize, std::borrow::Cow<'a, str>)> {
    let host = host.map(|h| {
        h.rsplit_once(':')
            .map_or(h, |(name, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
            .to_ascii_lowercase()
    });
    let mut best: Option<(usize, (usize, bool))> = None;
    for (i, r) in routes.iter().enumerate() {
        if let Some(h) = &r.host {
            if host.as_deref() != Some(h.as_str()) {
                continue;
            }
        }
        let len = match &r.prefix {
            None => 0,
            Some(p) if path == p || path.starts_with(&format!("{p}/")) => p.len(),
            Some(_) => continue,
        };
        let rank = (len, r.host.is_some());
        if best.is_none_or(|(_, b)| rank > b) {
            best = Some((i, rank));
        }
    }
    let (i, _) = best?;
    let r = &routes[i];
    let forwarded = match (&r.prefix, r.strip_prefix) {
        (Some(p), true) => {
            let rest = &path[p.len()..];
            if rest.is_empty() {
                "/".into()
            } else {
                rest.into()
            }
        }
        _ => path.into(),
    };
    Some((i, forwarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> (Vec<RouteConfig>, Vec<String>) {
        let file: toml::Table = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        (parse(&file, &Env::new(), &mut errors), errors)
    }

    #[test]
    fn parses_and_reports_every_bad_field() {
        let (r, e) = routes(
            r#"
[[routes]]
prefix = "anthropic/"
upstream = "https://api.anthropic.com"
strip_prefix = true
[[routes]]
host = "Azure.Internal"
upstream = "https://x.openai.azure.com"
[[routes]]
upstream = "ftp://nope"
strip_prefix = "yes"
colour = 1
"#,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix.as_deref(), Some("/anthropic"));
        assert_eq!(r[1].host.as_deref(), Some("azure.internal"));
        for needle in [
            "routes[2].colour",
            "routes[2]: needs a prefix",
            "routes[2].upstream",
            "routes[2].strip_prefix",
        ] {
            assert!(e.iter().any(|x| x.contains(needle)), "{needle} in {e:?}");
        }
    }

    #[test]
    fn selection_by_prefix_and_host() {
        let (r, e) = routes(
            r#"
[[routes]]
prefix = "/anthropic"
upstream = "https://api.anthropic.com"
strip_prefix = true
[[routes]]
prefix = "/anthropic/beta"
upstream = "https://beta.example"
[[routes]]
host = "azure.internal"
upstream = "https://x.openai.azure.com"
"#,
        );
        assert!(e.is_empty());
        let pick = |host: Option<&str>, p: &str| {
            select(&r, host, p).map(|(i, path)| (i, path.into_owned()))
        };
        assert_eq!(
            pick(None, "/anthropic/v1/messages"),
            Some((0, "/v1/messages".into()))
        );
        assert_eq!(pick(None, "/anthropic"), Some((0, "/".into())));
        assert_eq!(pick(None, "/anthropicx/v1"), None);
        assert_eq!(
            pick(None, "/anthropic/beta/v1/messages"),
            Some((1, "/anthropic/beta/v1/messages".into()))
        );
        assert_eq!(
            pick(Some("Azure.Internal:8788"), "/v1/chat/completions"),
            Some((2, "/v1/chat/completions".into()))
        );
        assert_eq!(pick(Some("other"), "/v1/chat/completions"), None);
    }
}
