//! URLs for display: what a log line, an error message or a 502 body may say
//! about a URL without leaking a secret. Userinfo (`user:password@`), the
//! query and the fragment are dropped; the scheme, host, port and (when the
//! URL is unambiguous) the path are kept.
//!
//! Pure and total: any input gives an answer, and input that does not read as
//! `scheme://host...` gives [`UNPARSABLE`], never the raw text (it may be a
//! token pasted in the wrong place).

use http::Uri;

/// What an input that is not recognisably a URL is shown as.
pub const UNPARSABLE: &str = "<unparsable URL>";

/// `s` for display: `scheme://host[:port][/path]`, without userinfo, query or
/// fragment. When `s` holds an `@` the path is left out too (a password with
/// a `/` or `#` in it makes the split ambiguous).
pub fn url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return UNPARSABLE.into();
    };
    if !is_scheme(scheme) {
        return UNPARSABLE.into();
    }
    if let Some(at) = rest.rfind('@') {
        let host = host_prefix(&rest[at + 1..]);
        return if host.is_empty() {
            UNPARSABLE.into()
        } else {
            format!("{scheme}://{host}")
        };
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = host_prefix(authority);
    if host.len() != authority.len() || host.is_empty() {
        return UNPARSABLE.into();
    }
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let shown: String = path.chars().take_while(|c| c.is_ascii_graphic()).collect();
    let cut = if shown.len() < path.len() { "…" } else { "" };
    format!("{scheme}://{host}{shown}{cut}")
}

/// A parsed URI for display, as [`url`] shows it.
pub fn uri(u: &Uri) -> String {
    let (Some(scheme), Some(host)) = (u.scheme_str(), u.host()) else {
        return url(&u.to_string());
    };
    let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let path = match u.path() {
        "/" => "",
        p => p,
    };
    format!("{scheme}://{host}{port}{path}")
}

/// Whether the authority of `s` (between `://` and the first `/`, `?` or
/// `#`) holds userinfo.
pub fn has_userinfo(s: &str) -> bool {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].contains('@')
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// The longest prefix made of characters a host and port can hold.
fn host_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~:[]%".contains(c)))
        .unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_userinfo_query_and_fragment() {
        for (input, shown) in [
            ("https://api.openai.com", "https://api.openai.com"),
            ("http://h:8080/base/v1", "http://h:8080/base/v1"),
            ("http://user:pw@host:5000/x", "http://host:5000"),
            ("http://user@host", "http://host"),
            ("https://h/p?api-key=SECRET#frag", "https://h/p"),
            ("https://h?token=SECRET", "https://h"),
            ("http://[::1]:9/p", "http://[::1]:9/p"),
            // Ambiguous passwords: the host after the last @, no path.
            ("http://u:p/w@host/path", "http://host"),
            ("http://u:p#w@host", "http://host"),
            ("http://u:p@w@host", "http://host"),
            // An @ in the query: nothing after the host's characters.
            ("http://h/x?email=a@b&token=SECRET", "http://b"),
        ] {
            assert_eq!(url(input), shown, "{input}");
        }
    }

    #[test]
    fn unparsable_input_is_never_echoed() {
        for input in [
            "",
            "sk-SECRET",
            "user:SECRET@host",
            "://SECRET",
            "1http://SECRET",
            "http://SECRET bad/x",
            "http://@",
        ] {
            let shown = url(input);
            assert_eq!(shown, UNPARSABLE, "{input}");
        }
        assert_eq!(url("http://h/a b"), "http://h/a…");
    }

    #[test]
    fn parsed_uris_and_userinfo_detection() {
        let u: Uri = "http://user:SECRET@h:81/p?q=SECRET".parse().unwrap();
        assert_eq!(uri(&u), "http://h:81/p");
        assert_eq!(uri(&"https://h".parse().unwrap()), "https://h");
        assert_eq!(
            uri(&"http://[::1]:9/p".parse().unwrap()),
            "http://[::1]:9/p"
        );
        assert!(has_userinfo("http://u:p@h"));
        assert!(has_userinfo("http://u@h/x"));
        assert!(!has_userinfo("http://h/x@y"));
        assert!(!has_userinfo("http://h?x=a@b"));
    }
}
