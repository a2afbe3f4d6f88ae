//! The upstream credential llmtap adds itself, for the default upstream
//! (`[upstream]`, `LLMTAP_UPSTREAM_CREDENTIAL*`) and per route (`[[routes]]`):
//! where the key comes from, which header carries it, and whether it replaces
//! the agent's own. See `docs/upstream-credentials.md`.
//!
//! ```toml
//! [[routes]]
//! prefix = "/anthropic"
//! upstream = "https://api.anthropic.com"
//! credential = "env:ANTHROPIC_API_KEY"      # or "file:/path", "databricks"
//! credential_header = "x-api-key"           # default: by provider
//! credential_override = false               # the agent's own header wins
//! ```
//!
//! Parsing is pure except for reading the file a `file:` credential names
//! (once, here: a missing or unreadable file is an error at start). A key is
//! held as a [`Secret`]: never printed, not even by `Debug`; no error message
//! echoes it (nor the `credential` setting, which may be a pasted key).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use super::{duration_max, Env, HOUR};
use crate::databricks::config::{resolve as resolve_workspace, WorkspaceConfig};

/// Keys of a credential, in `[upstream]` and in each `[[routes]]` entry.
pub const KEYS: [&str; 4] = [
    "credential",
    "credential_header",
    "credential_override",
    "credential_check_interval",
];

/// The largest credential file read; past it the file is refused.
pub const FILE_MAX_BYTES: usize = 64 * 1024;
/// How often a credential file is checked for a new value by default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest check interval allowed.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A credential llmtap adds to the requests of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialConfig {
    pub source: CredentialSource,
    /// `None`: chosen per call by the provider ([`CredentialHeader`]).
    pub header: Option<CredentialHeader>,
    /// `true`: llmtap's credential replaces the agent's; `false` (default):
    /// the agent's own credential header, when present, wins.
    pub override_agent: bool,
    /// How often a `file:` credential is checked for a new value.
    pub check_interval: Duration,
}

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSource {
    /// `env:NAME`: the variable's value at start.
    Env { var: String, key: Secret },
    /// `file:PATH`: the file's content (trailing newline trimmed), read at
    /// start and re-read while running.
    File { path: PathBuf, key: Secret },
    /// `databricks` / `databricks:PROFILE`: a token from the Databricks
    /// auth resolution (PAT or OAuth M2M) for that workspace.
    Databricks {
        profile: Option<String>,
        workspace: WorkspaceConfig,
    },
}

impl CredentialSource {
    /// What the source is, for logs: never the key.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Env { var, .. } => format!("env:{var}"),
            CredentialSource::File { path, .. } => format!("file:{}", path.display()),
            CredentialSource::Databricks { profile: None, .. } => "databricks".into(),
            CredentialSource::Databricks {
                profile: Some(p), ..
            } => format!("databricks:{p}"),
        }
    }
}

/// The header that carries the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialHeader {
    /// `Authorization: Bearer <key>` (OpenAI and compatible servers, Databricks).
    Bearer,
    /// `<name>: <key>` (`x-api-key` for Anthropic, `api-key` for Azure OpenAI).
    Raw(HeaderName),
}

impl CredentialHeader {
    /// The header's name.
    pub fn name(&self) -> HeaderName {
        match self {
            CredentialHeader::Bearer => http::header::AUTHORIZATION,
            CredentialHeader::Raw(n) => n.clone(),
        }
    }

    /// `credential_header`: `authorization` (or `bearer`) means
    /// `Authorization: Bearer <key>`; any other name carries the bare key.
    pub fn parse(s: &str) -> Result<CredentialHeader, String> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "authorization" || lower == "bearer" {
            return Ok(CredentialHeader::Bearer);
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| format!("not a header name: {s:?}"))?;
        const REFUSED: [&str; 9] = [
            "host",
            "content-length",
            "content-type",
            "content-encoding",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            "proxy-authorization",
        ];
        if REFUSED.contains(&name.as_str()) {
            return Err(format!("{s:?} cannot carry a credential"));
        }
        Ok(CredentialHeader::Raw(name))
    }
}

/// A key, ready as a header value both bare and as `Bearer <key>`; both
/// marked sensitive (HTTP/2 never indexes them; `Debug` shows `Sensitive`).
#[derive(Clone, PartialEq)]
pub struct Secret {
    bare: HeaderValue,
    bearer: HeaderValue,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// A key from text: surrounding whitespace (a file's trailing newline)
    /// is trimmed; what is left must be non-empty printable ASCII. Errors
    /// never show the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Secret, String> {
        let key = bytes.trim_ascii();
        if key.is_empty() {
            return Err("is empty".into());
        }
        if !key.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err("holds characters an HTTP header cannot carry (not shown)".into());
        }
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(key);
        let mut bare = HeaderValue::from_bytes(key).map_err(|_| "not a header value")?;
        let mut bearer = HeaderValue::from_bytes(&bearer).map_err(|_| "not a header value")?;
        bare.set_sensitive(true);
        bearer.set_sensitive(true);
        Ok(Secret { bare, bearer })
    }

    /// A key from an `Authorization` value (`Bearer <token>`, as the
    /// Databricks auth gives it).
    pub fn from_authorization(value: &HeaderValue) -> Result<Secret, String> {
        let bytes = value.as_bytes();
        let token = bytes.strip_prefix(b"Bearer ").unwrap_or(bytes);
        Secret::parse(token)
    }

    /// The value for `header`.
    pub fn value(&self, header: &CredentialHeader) -> HeaderValue {
        match header {
            CredentialHeader::Bearer => self.bearer.clone(),
            CredentialHeader::Raw(_) => self.bare.clone(),
        }
    }
}

/// Reads a credential file: at most [`FILE_MAX_BYTES`], trimmed. Blocking
/// I/O: call it at config load or on a blocking thread. Errors name the
/// file, never its content.
pub fn read_key_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(FILE_MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() > FILE_MAX_BYTES {
        return Err(format!(
            "{shown} is larger than {} KiB: not a key",
            FILE_MAX_BYTES / 1024
        ));
    }
    Secret::parse(&bytes).map_err(|e| format!("{shown} {e}"))
}

/// The four settings as written, each with where it came from (a variable's
/// name or `table.key`).
#[derive(Default)]
pub(super) struct Raw {
    pub credential: Option<(String, String)>,
    pub header: Option<(String, String)>,
    pub override_agent: Option<(String, String)>,
    pub check_interval: Option<(String, String)>,
}

impl Raw {
    /// The settings of a TOML table (`[upstream]` or a `[[routes]]` entry
    /// named `at`); a value of the wrong type is reported.
    pub fn from_table(at: &str, t: &toml::Table, errors: &mut Vec<String>) -> Raw {
        let mut get = |key: &str| {
            let value = t.get(key)?;
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    errors.push(format!("{at}.{key}: unexpected {}", other.type_str()));
                    return None;
                }
            };
            Some((text, format!("{at}.{key}")))
        };
        Raw {
            credential: get("credential"),
            header: get("credential_header"),
            override_agent: get("credential_override"),
            check_interval: get("credential_check_interval"),
        }
    }

    /// `LLMTAP_UPSTREAM_CREDENTIAL*` over the `[upstream]` table's settings.
    pub fn with_env(mut self, env: &Env) -> Raw {
        let pick = |slot: &mut Option<(String, String)>, name: &str| {
            if let Some(v) = env.get(name).filter(|v| !v.is_empty()) {
                *slot = Some((v.clone(), name.to_string()));
            }
        };
        pick(&mut self.credential, "LLMTAP_UPSTREAM_CREDENTIAL");
        pick(&mut self.header, "LLMTAP_UPSTREAM_CREDENTIAL_HEADER");
        pick(
            &mut self.override_agent,
            "LLMTAP_UPSTREAM_CREDENTIAL_OVERRIDE",
        );
        pick(
            &mut self.check_interval,
            "LLMTAP_UPSTREAM_CREDENTIAL_CHECK_INTERVAL",
        );
        self
    }

    /// The validated credential; `None` when none is set (or it is bad:
    /// then every problem is in `errors`).
    pub fn resolve(self, env: &Env, errors: &mut Vec<String>) -> Option<CredentialConfig> {
        let Some((credential, at)) = self.credential else {
            for (_, at) in [self.header, self.override_agent, self.check_interval]
                .into_iter()
                .flatten()
            {
                errors.push(format!("{at}: set without a credential"));
            }
            return None;
        };
        let header = self.header.and_then(|(v, at)| {
            CredentialHeader::parse(&v)
                .map_err(|e| errors.push(format!("{at}: {e}")))
                .ok()
        });
        let override_agent = match self.override_agent {
            None => Some(false),
            Some((v, at)) => match v.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    errors.push(format!("{at}: expected true or false, got {v:?}"));
                    None
                }
            },
        };
        let source = source(&credential, &at, env, errors);
        let check_interval = match self.check_interval {
            None => Some(DEFAULT_CHECK_INTERVAL),
            Some((_, at)) if !matches!(source, Some(CredentialSource::File { .. })) => {
                errors.push(format!("{at}: only a file: credential is checked"));
                None
            }
            Some((v, at)) => match duration_max(HOUR)(&v) {
                Ok(d) if d >= MIN_CHECK_INTERVAL => Some(d),
                Ok(_) => {
                    errors.push(format!("{at}: must be at least 100ms, got {v:?}"));
                    None
                }
                Err(e) => {
                    errors.push(format!("{at}: {e}"));
                    None
                }
            },
        };
        Some(CredentialConfig {
            source: source?,
            header,
            override_agent: override_agent?,
            check_interval: check_interval?,
        })
    }
}

/// `env:NAME`, `file:PATH`, `databricks` or `databricks:PROFILE`. The text
/// itself is never echoed: a key pasted here must not reach a log.
fn source(text: &str, at: &str, env: &Env, errors: &mut Vec<String>) -> Option<CredentialSource> {
    let text = text.trim();
    let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
    let result = match kind {
        "env" if valid_var(rest) => match env.get(rest).map(|v| Secret::parse(v.as_bytes())) {
            None => Err(format!("environment variable {rest} is not set")),
            Some(Err(e)) => Err(format!("environment variable {rest} {e}")),
            Some(Ok(key)) => Ok(CredentialSource::Env {
                var: rest.to_string(),
                key,
            }),
        },
        "env" => Err("env: needs a variable name (env:OPENAI_API_KEY)".to_string()),
        "file" if !rest.is_empty() => {
            let path = PathBuf::from(rest);
            read_key_file(&path).map(|key| CredentialSource::File { path, key })
        }
        "file" => Err("file: needs a path (file:/var/run/secrets/openai)".to_string()),
        "databricks" => {
            let profile = Some(rest).filter(|p| !p.is_empty()).map(str::to_string);
            resolve_workspace(env, profile.as_deref())
                .map(|workspace| CredentialSource::Databricks { profile, workspace })
        }
        _ => Err("expected env:VAR, file:PATH or databricks[:PROFILE] (value not shown: a key never goes in the config itself)".to_string()),
    };
    result.map_err(|e| errors.push(format!("{at}: {e}"))).ok()
}

/// A Databricks token goes only to its own workspace: `upstream` (the
/// default's or a route's) must have the workspace host's scheme, host and
/// port; reported under `at` otherwise.
pub(super) fn check_upstream(
    at: &str,
    credential: &CredentialConfig,
    upstream: &Uri,
    errors: &mut Vec<String>,
) {
    let CredentialSource::Databricks { workspace, .. } = &credential.source else {
        return;
    };
    let origin = |u: &Uri| {
        let scheme = u.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let port = u
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        (scheme, u.host().map(str::to_ascii_lowercase), port)
    };
    let same = workspace
        .host
        .parse::<Uri>()
        .is_ok_and(|w| origin(&w) == origin(upstream));
    if !same {
        errors.push(format!(
            "{at}: a Databricks token goes only to its workspace {}, not to {} (set the upstream to the workspace)",
            workspace.host,
            crate::redact::uri(upstream)
        ));
    }
}

/// An environment variable's name: letters, digits, `_`, not starting with a digit.
fn valid_var(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;
