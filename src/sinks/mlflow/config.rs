//! The MLflow sink's settings: the tracking server, the experiment, its
//! credentials. Read from the MLflow client's own variables
//! (`MLFLOW_TRACKING_URI`, `MLFLOW_EXPERIMENT_ID` / `_NAME`,
//! `MLFLOW_TRACKING_TOKEN` / `_USERNAME` / `_PASSWORD`,
//! `MLFLOW_TRACKING_SERVER_CERT_PATH`) and the `[mlflow]` table — the
//! shortcut — or from a `[[sinks]]` entry of `kind = "mlflow"`.

use http::Uri;

use crate::config::layers::{parse_bool, parse_http_url, unknown_keys, Env, ExtraRoots, Layers};

#[derive(Debug, Clone, PartialEq)]
pub struct MlflowConfig {
    /// Base URL of the tracking server, without a trailing slash.
    pub tracking_uri: String,
    pub experiment: ExperimentRef,
    pub auth: MlflowAuth,
    /// Extra CAs trusted for the tracking server (`MLFLOW_TRACKING_SERVER_CERT_PATH`).
    pub server_ca: ExtraRoots,
    /// Source metadata (`mlflow.source.name` / `.type`) on every trace, at
    /// one StartTraceV3 call per trace (`source_metadata`,
    /// `LLMTAP_MLFLOW_SOURCE_METADATA`); off: only on traces whose
    /// metadata needs that call anyway.
    pub source_metadata: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentRef {
    Id(String),
    Name(String),
}

#[derive(Clone, PartialEq)]
pub enum MlflowAuth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for MlflowAuth {
    // Secrets never reach a log, not even a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MlflowAuth::None => f.write_str("None"),
            MlflowAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            MlflowAuth::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
        }
    }
}

/// Keys of a `[[sinks]]` entry of this kind (besides `kind`, `name` and the
/// delivery keys every entry has). Secrets are never inline: the token, user
/// and password come from the variables `token_env`, `username_env`,
/// `password_env` name (defaults: the MLflow client's own).
pub const TABLE_KEYS: &[&str] = &[
    "tracking_uri",
    "experiment_id",
    "experiment_name",
    "tracking_server_cert_path",
    "token_env",
    "username_env",
    "password_env",
    "source_metadata",
];

/// The shortcut: an MLflow sink when `MLFLOW_TRACKING_URI` (or
/// `mlflow.tracking_uri`) names a tracking server — not `databricks`, which
/// is the Databricks sink's.
pub fn shortcut(l: &mut Layers<'_>) -> Option<MlflowConfig> {
    let uri = l.string(None, &["MLFLOW_TRACKING_URI"], ("mlflow", "tracking_uri"))?;
    if is_databricks(&uri) {
        return None;
    }
    let secrets = Secrets::default();
    let env = l.env;
    read(
        l,
        &uri,
        "MLFLOW_TRACKING_URI",
        ("mlflow", MLFLOW_KEYS),
        &secrets,
        env,
    )
}

/// Whether a tracking URI names Databricks (`databricks`,
/// `databricks://PROFILE`): exactly what the Databricks sink takes
/// (`sinks::databricks::config::tracking_uri_profile`); anything else is
/// read, and refused if it is not a URL, here.
pub fn is_databricks(uri: &str) -> bool {
    uri == "databricks" || uri.starts_with("databricks://")
}

/// A `[[sinks]]` entry of `kind = "mlflow"`, read from its table alone (the
/// process environment only for the secrets it names).
pub fn from_table(name: &str, t: &toml::Table, env: &Env) -> Result<MlflowConfig, Vec<String>> {
    let at = format!("sinks.{name}");
    let unknown = unknown_keys(&at, t, TABLE_KEYS);
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let empty = Env::new();
    let mut l = Layers::entry(&at, t, &empty);
    let secret = |l: &mut Layers<'_>, key: &str, default: &str| {
        let var = l.string(None, &[], (&at, key)).unwrap_or(default.into());
        env.get(&var).filter(|v| !v.is_empty()).cloned()
    };
    let secrets = Secrets {
        token: secret(&mut l, "token_env", "MLFLOW_TRACKING_TOKEN"),
        user: secret(&mut l, "username_env", "MLFLOW_TRACKING_USERNAME"),
        password: secret(&mut l, "password_env", "MLFLOW_TRACKING_PASSWORD"),
        given: true,
    };
    let Some(uri) = l.string(None, &[], (&at, "tracking_uri")) else {
        return Err(vec![format!(
            "{at}.tracking_uri: required for kind = \"mlflow\""
        )]);
    };
    let cfg = read(
        &mut l,
        &uri,
        &format!("{at}.tracking_uri"),
        (&at, MLFLOW_KEYS),
        &secrets,
        &empty,
    );
    match (cfg, l.errors.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(l.errors),
    }
}

/// The `[mlflow]`-style keys: experiment id, name, CA file, source metadata.
const MLFLOW_KEYS: [&str; 4] = [
    "experiment_id",
    "experiment_name",
    "tracking_server_cert_path",
    "source_metadata",
];

/// Credentials from the environment: the MLflow client's variables (the
/// shortcut), or the ones a `[[sinks]]` entry names (`given`).
#[derive(Default)]
struct Secrets {
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    given: bool,
}

fn read(
    l: &mut Layers<'_>,
    uri: &str,
    uri_source: &str,
    (table, keys): (&str, [&str; 4]),
    secrets: &Secrets,
    env: &Env,
) -> Option<MlflowConfig> {
    let exp_id = l.string(None, &["MLFLOW_EXPERIMENT_ID"], (table, keys[0]));
    let exp_name = l.string(None, &["MLFLOW_EXPERIMENT_NAME"], (table, keys[1]));
    let (tracking_uri, userinfo) = match parse_tracking_uri(uri) {
        Ok((u, creds)) => (u.to_string().trim_end_matches('/').to_string(), creds),
        Err(e) => {
            l.errors.push(format!("{uri_source}: {e}"));
            return None;
        }
    };
    let experiment = match (exp_id, exp_name) {
        (Some(id), _) => ExperimentRef::Id(id),
        (None, Some(name)) => ExperimentRef::Name(name),
        (None, None) => ExperimentRef::Name("llmtap".into()),
    };
    let from_env = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let (token, user, password) = match secrets.given {
        true => (
            secrets.token.clone(),
            secrets.user.clone(),
            secrets.password.clone(),
        ),
        false => (
            from_env("MLFLOW_TRACKING_TOKEN"),
            from_env("MLFLOW_TRACKING_USERNAME"),
            env.get("MLFLOW_TRACKING_PASSWORD").cloned(),
        ),
    };
    // Explicit settings win over credentials in the URL.
    let auth = match (token, user, userinfo) {
        (Some(t), _, _) => MlflowAuth::Bearer(t),
        (None, Some(u), _) => MlflowAuth::Basic {
            user: u,
            password: password.unwrap_or_default(),
        },
        (None, None, Some((user, password))) => MlflowAuth::Basic { user, password },
        (None, None, None) => MlflowAuth::None,
    };
    let server_ca = l.roots("MLFLOW_TRACKING_SERVER_CERT_PATH", (table, keys[2]));
    let source_metadata = l.parsed(
        Some("LLMTAP_MLFLOW_SOURCE_METADATA"),
        (table, keys[3]),
        false,
        parse_bool,
    );
    Some(MlflowConfig {
        tracking_uri,
        experiment,
        auth,
        server_ca,
        source_metadata,
    })
}

/// Parses `MLFLOW_TRACKING_URI`: the URL without its userinfo, and the
/// userinfo's user and password, percent-decoded (used as Basic auth).
fn parse_tracking_uri(s: &str) -> Result<(Uri, Option<(String, String)>), String> {
    let uri = parse_http_url(s)?;
    let Some(authority) = uri.authority().filter(|a| a.as_str().contains('@')) else {
        return Ok((uri, None));
    };
    let (userinfo, host) = authority
        .as_str()
        .rsplit_once('@')
        .expect("checked for an @ above");
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                "the credentials in the URL are not UTF-8 once percent-decoded".to_string()
            })
    };
    let creds = (decode(user)?, decode(password)?);
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    let stripped = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(host)
        .path_and_query(path)
        .build()
        .map_err(|e| format!("not a URL: {} ({e})", crate::redact::url(s)))?;
    let any = !creds.0.is_empty() || !creds.1.is_empty();
    Ok((stripped, any.then_some(creds)))
}
