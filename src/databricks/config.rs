//! Which workspace and which credential, resolved from the environment and
//! the `~/.databrickscfg` profile file the way the Databricks SDK for Python
//! does it (`databricks/sdk/config.py`, 0.162.0):
//!
//! 1. Attributes from the environment: `DATABRICKS_HOST`, `DATABRICKS_TOKEN`,
//!    `DATABRICKS_CLIENT_ID`, `DATABRICKS_CLIENT_SECRET`, `DATABRICKS_AUTH_TYPE`
//!    (empty values count as unset).
//! 2. The profile file (`DATABRICKS_CONFIG_FILE`, default `~/.databrickscfg`,
//!    `~` from `HOME` in the given env) fills only attributes still unset.
//!    The profile is the explicit one (from `databricks://PROFILE`), else
//!    `DATABRICKS_CONFIG_PROFILE`, else `[__settings__] default_profile`, else
//!    `[DEFAULT]`. As in the SDK, when no profile is named and the environment
//!    already sets a host or a credential, the file is not read at all; a
//!    named profile missing from an existing file is an error; a missing file
//!    is not (what is then missing is reported instead).
//! 3. The credential: `auth_type` `pat` or `oauth-m2m` picks one; otherwise a
//!    token and client credentials together are an error ("more than one
//!    authorization method configured", as the SDK says), a token means PAT,
//!    a client id and secret mean OAuth machine-to-machine.
//! 4. The host: `https://` added when no scheme is given, trailing slashes
//!    and an explicit `:443` removed (the SDK's `_fix_host_if_needed`).
//!    **llmtap's rule:** `http://` is accepted only for a loopback host
//!    (`127.0.0.0/8`, `::1`, `localhost`) — a local stand-in — since a
//!    workspace token must not cross a network in clear text.
//!
//! Errors name the missing or bad setting and where it came from, never a
//! secret; `Debug` of the result redacts secrets.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ini::{self, Ini};

/// A secret string: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for building a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How llmtap authenticates to the workspace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AuthConfig {
    /// A personal access token, sent as `Authorization: Bearer <pat>`.
    Pat(Secret),
    /// A service principal: OAuth client credentials against the workspace's
    /// OIDC token endpoint.
    OAuthM2M {
        client_id: String,
        client_secret: Secret,
    },
}

/// A resolved workspace: its base URL (no trailing slash) and credential.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WorkspaceConfig {
    pub host: String,
    pub auth: AuthConfig,
    /// The profile that was read from the config file, if one was.
    pub profile: Option<String>,
}

/// The attributes llmtap reads (a subset of the SDK's).
#[derive(Default)]
struct Attrs {
    host: Option<String>,
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    auth_type: Option<String>,
}

impl Attrs {
    fn any_auth(&self) -> bool {
        self.token.is_some() || self.client_id.is_some() || self.client_secret.is_some()
    }
}

/// Resolves the workspace from `env` (the process environment as a map) and
/// an explicit profile name (from `MLFLOW_TRACKING_URI=databricks://PROFILE`).
/// Reads the profile file when the rules above say so.
pub fn resolve(
    env: &HashMap<String, String>,
    profile: Option<&str>,
) -> Result<WorkspaceConfig, String> {
    let path = config_file_path(env);
    let text = match &path {
        Some(p) if needs_file(env, profile) => read_optional(p)?,
        _ => None,
    };
    resolve_with(env, profile, path.as_deref(), text.as_deref())
}

/// [`resolve`] with the profile file's text already read (`None`: no file).
pub fn resolve_with(
    env: &HashMap<String, String>,
    profile: Option<&str>,
    path: Option<&Path>,
    file_text: Option<&str>,
) -> Result<WorkspaceConfig, String> {
    let mut a = env_attrs(env);
    let where_ = path.map_or_else(
        || "the Databricks config file".to_string(),
        |p| p.display().to_string(),
    );
    let named = profile
        .map(str::to_string)
        .or_else(|| get(env, "DATABRICKS_CONFIG_PROFILE"));
    let mut used_profile = None;
    if let (true, Some(text)) = (needs_file(env, profile), file_text) {
        let ini = ini::parse(text).map_err(|e| format!("{where_}: {e}"))?;
        if let Some(name) = pick_profile(&ini, named.as_deref(), &where_)? {
            fill_from_profile(&mut a, &ini, &name);
            used_profile = Some(name);
        }
    }
    let origin = match &used_profile {
        Some(p) => format!("the environment or profile [{p}] in {where_}"),
        None if named.is_some() && file_text.is_none() => {
            format!("the environment ({where_} does not exist)")
        }
        None => "the environment".to_string(),
    };
    let host = a
        .host
        .as_deref()
        .ok_or_else(|| format!("no Databricks host: set DATABRICKS_HOST (looked in {origin})"))?;
    let host = normalize_host(host)?;
    let auth = pick_auth(a, &origin)?;
    Ok(WorkspaceConfig {
        host,
        auth,
        profile: used_profile,
    })
}

/// The profile named by `databricks://PROFILE`: `databricks` -> `None`,
/// `databricks://NAME` -> `Some(NAME)`. Secret-scope URIs
/// (`databricks://scope:prefix`) are not supported.
pub fn profile_from_tracking_uri(uri: &str) -> Result<Option<String>, String> {
    if uri == "databricks" {
        return Ok(None);
    }
    let Some(rest) = uri.strip_prefix("databricks://") else {
        return Err("MLFLOW_TRACKING_URI is not `databricks` or `databricks://PROFILE`".into());
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.contains([':', '/', '@']) {
        return Err("MLFLOW_TRACKING_URI=databricks://<scope>:<prefix> (secret scopes) is not supported; name a profile: databricks://PROFILE".into());
    }
    Ok(Some(rest.to_string()))
}

fn get(env: &HashMap<String, String>, key: &str) -> Option<String> {
    env.get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn env_attrs(env: &HashMap<String, String>) -> Attrs {
    Attrs {
        host: get(env, "DATABRICKS_HOST"),
        token: get(env, "DATABRICKS_TOKEN"),
        client_id: get(env, "DATABRICKS_CLIENT_ID"),
        client_secret: get(env, "DATABRICKS_CLIENT_SECRET"),
        auth_type: get(env, "DATABRICKS_AUTH_TYPE"),
    }
}

/// The SDK skips the file when no profile is named and the environment
/// already configures a host or a credential.
fn needs_file(env: &HashMap<String, String>, profile: Option<&str>) -> bool {
    let a = env_attrs(env);
    profile.is_some()
        || get(env, "DATABRICKS_CONFIG_PROFILE").is_some()
        || !(a.any_auth() || a.host.is_some())
}

/// `DATABRICKS_CONFIG_FILE` or `~/.databrickscfg`, `~` expanded with `HOME`.
fn config_file_path(env: &HashMap<String, String>) -> Option<PathBuf> {
    let raw = get(env, "DATABRICKS_CONFIG_FILE").unwrap_or_else(|| "~/.databrickscfg".into());
    match raw.strip_prefix("~/") {
        Some(rest) => get(env, "HOME").map(|h| Path::new(&h).join(rest)),
        None if raw == "~" => None,
        None => Some(PathBuf::from(raw)),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the Databricks config file {}: {e}",
            path.display()
        )),
    }
}

/// The profile to load: the named one (must exist), else
/// `[__settings__] default_profile`, else `[DEFAULT]` if it has settings.
fn pick_profile(ini: &Ini, named: Option<&str>, where_: &str) -> Result<Option<String>, String> {
    const SETTINGS: &str = "__settings__";
    let (name, fallback) = match named {
        Some(n) => (n.to_string(), false),
        None => match ini
            .get(SETTINGS, "default_profile")
            .filter(|s| !s.is_empty())
        {
            Some(d) => (d.to_string(), false),
            None => ("DEFAULT".to_string(), true),
        },
    };
    if name == SETTINGS {
        return Err(format!(
            "{SETTINGS} is a reserved section name in {where_}, not a profile"
        ));
    }
    match ini.section(&name) {
        Some(kv) if !kv.is_empty() || !fallback => Ok(Some(name)),
        Some(_) => Ok(None),
        None if fallback => Ok(None),
        None => Err(format!("{where_} has no [{name}] profile")),
    }
}

fn fill_from_profile(a: &mut Attrs, ini: &Ini, name: &str) {
    let val = |k: &str| {
        ini.get(name, k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    a.host = a.host.take().or_else(|| val("host"));
    a.token = a.token.take().or_else(|| val("token"));
    a.client_id = a.client_id.take().or_else(|| val("client_id"));
    a.client_secret = a.client_secret.take().or_else(|| val("client_secret"));
    a.auth_type = a.auth_type.take().or_else(|| val("auth_type"));
}

fn pick_auth(a: Attrs, origin: &str) -> Result<AuthConfig, String> {
    let pat = |t: Option<String>| {
        t.map(|t| AuthConfig::Pat(Secret(t))).ok_or_else(|| {
            format!("auth_type is pat but no token is set (DATABRICKS_TOKEN; looked in {origin})")
        })
    };
    let oauth = |id: Option<String>, secret: Option<String>| match (id, secret) {
        (Some(client_id), Some(s)) => Ok(AuthConfig::OAuthM2M {
            client_id,
            client_secret: Secret(s),
        }),
        (None, _) => Err(format!(
            "DATABRICKS_CLIENT_ID is not set (DATABRICKS_CLIENT_SECRET is; looked in {origin})"
        )),
        (_, None) => Err(format!(
            "DATABRICKS_CLIENT_SECRET is not set (DATABRICKS_CLIENT_ID is; looked in {origin})"
        )),
    };
    match a.auth_type.as_deref() {
        Some("pat") => return pat(a.token),
        Some("oauth-m2m") => return oauth(a.client_id, a.client_secret),
        Some(other) => {
            return Err(format!(
                "DATABRICKS_AUTH_TYPE / auth_type `{other}` is not supported by llmtap (use pat or oauth-m2m)"
            ))
        }
        None => {}
    }
    let has_oauth = a.client_id.is_some() || a.client_secret.is_some();
    match (a.token, has_oauth) {
        (Some(_), true) => Err(format!(
            "more than one authorization method configured: oauth and pat (a token and client credentials in {origin}); keep one, or set DATABRICKS_AUTH_TYPE to pat or oauth-m2m"
        )),
        (Some(t), false) => pat(Some(t)),
        (None, true) => oauth(a.client_id, a.client_secret),
        (None, false) => Err(format!(
            "no Databricks credentials: set DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET, or name a profile that has them (looked in {origin})"
        )),
    }
}

/// The SDK's host fix-up plus llmtap's loopback-only `http://` rule.
pub fn normalize_host(raw: &str) -> Result<String, String> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| "DATABRICKS_HOST is not a valid URL".to_string())?;
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("DATABRICKS_HOST has no host name")?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("DATABRICKS_HOST must not carry user info (put credentials in DATABRICKS_TOKEN or the client id/secret)".into());
    }
    if uri.query().is_some() {
        return Err("DATABRICKS_HOST must not have a query string".into());
    }
    match scheme {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => return Err(format!("DATABRICKS_HOST must use https:// (http:// is accepted only for a loopback stand-in, not {host})")),
        _ => return Err("DATABRICKS_HOST must be an https:// URL".into()),
    }
    let port = match uri.port_u16() {
        Some(443) if scheme == "https" => String::new(),
        Some(p) => format!(":{p}"),
        None => String::new(),
    };
    let path = uri.path().trim_end_matches('/');
    Ok(format!(
        "{scheme}://{}{port}{path}",
        uri.host().unwrap_or(host)
    ))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
