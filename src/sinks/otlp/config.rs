//! The OTLP sink's settings, read the OpenTelemetry way.
//!
//! From the environment ([`from_env`]), as the OTLP exporter specification
//! defines the variables (signal-specific ones win over the generic ones):
//!
//! | variable | meaning |
//! | --- | --- |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the traces URL, used as is |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | a base URL; `/v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` | `k=v,k2=v2`, percent-decoded (secrets: never logged) |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` | `http/protobuf` (default) or `http/json`; `grpc` is refused |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` | `gzip` or `none` (default) |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` | milliseconds (default: `export.timeout`) |
//! | `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` | a PEM file of extra trusted CAs |
//! | `OTEL_TRACES_EXPORTER` | `none` turns the shortcut off; else it must list `otlp` |
//!
//! From one `[[sinks]]` entry of `kind = "otlp"` ([`from_table`]): `endpoint`
//! (base) or `traces_endpoint` (as is), `protocol`, `compression`, `timeout`
//! (milliseconds, or a string such as `"10s"`), `certificate`, `headers_env`
//! (the name of an env var holding `k=v,...` headers: header values are
//! secrets and never sit in the file) and `semconv`.
//!
//! Pure apart from reading the certificate file a setting names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::layers::load_roots;
use rustls::pki_types::CertificateDer;

/// The path OTLP/HTTP appends to a base endpoint for traces.
pub const TRACES_PATH: &str = "/v1/traces";

/// The kind name in `[[sinks]]`.
pub const KIND: &str = "otlp";

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/x-protobuf`.
    HttpProtobuf,
    /// `application/json` (OTLP-JSON: hex ids, camelCase, int64 as strings).
    HttpJson,
}

impl Protocol {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

/// Which attribute vocabulary the spans carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semconv {
    /// The OpenTelemetry GenAI semantic conventions; no `mlflow.*`.
    Genai,
    /// GenAI plus the OpenInference attributes Arize Phoenix reads.
    GenaiOpenInference,
    /// The canonical MLflow-shaped spans unchanged (an OTLP collector feeding MLflow).
    Mlflow,
}

impl Semconv {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Semconv::Genai => "genai",
            Semconv::GenaiOpenInference => "genai+openinference",
            Semconv::Mlflow => "mlflow",
        }
    }
}

/// Everything the OTLP sink needs; see the module docs.
#[derive(Clone, PartialEq)]
pub struct OtlpConfig {
    /// The full traces URL (`.../v1/traces`).
    pub url: String,
    pub protocol: Protocol,
    pub gzip: bool,
    /// The limit of one export call; `None`: the pipeline's `export.timeout`.
    pub timeout: Option<Duration>,
    /// Extra headers (secrets: [`std::fmt::Debug`] shows only their names).
    pub headers: Vec<(String, String)>,
    /// The PEM file of extra trusted CAs, and its certificates.
    pub ca_path: Option<PathBuf>,
    pub ca_certs: Vec<CertificateDer<'static>>,
    pub semconv: Semconv,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("url", &crate::redact::url(&self.url))
            .field("protocol", &self.protocol)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .field("headers", &names)
            .field("ca_path", &self.ca_path)
            .field("ca_certs", &self.ca_certs.len())
            .field("semconv", &self.semconv)
            .finish()
    }
}

/// One optional setting, whichever way it was given.
#[derive(Clone, Copy)]
enum Setting {
    Protocol,
    Compression,
    /// Milliseconds (the env variable; a TOML integer).
    TimeoutMs,
    /// `"10s"` (a TOML string).
    Timeout,
    /// `k=v,...` (the value itself, from the env).
    Headers,
    Certificate,
    Semconv,
}

impl OtlpConfig {
    /// The defaults around a traces URL.
    fn with_url(url: String) -> OtlpConfig {
        OtlpConfig {
            url,
            protocol: Protocol::HttpProtobuf,
            gzip: false,
            timeout: None,
            headers: Vec::new(),
            ca_path: None,
            ca_certs: Vec::new(),
            semconv: Semconv::Genai,
        }
    }

    /// Applies one setting named `name` (for messages) with value `v`.
    fn apply(&mut self, setting: Setting, name: &str, v: &str, errors: &mut Vec<String>) {
        match setting {
            Setting::Protocol => {
                self.protocol = keep(protocol(name, v), errors).unwrap_or(self.protocol)
            }
            Setting::Compression => self.gzip = keep(compression(name, v), errors).unwrap_or(false),
            Setting::TimeoutMs => self.timeout = keep(millis(name, v), errors),
            Setting::Timeout => self.timeout = keep(duration(name, v), errors),
            Setting::Headers => self.headers = keep(headers(name, v), errors).unwrap_or_default(),
            Setting::Certificate => load_ca(self, name, v, errors),
            Setting::Semconv => {
                self.semconv = keep(semconv(name, v), errors).unwrap_or(self.semconv)
            }
        }
    }
}

fn done(cfg: OtlpConfig, errors: Vec<String>) -> Result<OtlpConfig, Vec<String>> {
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// The shortcut for the registry: [`from_env`], its errors reported.
pub fn shortcut(l: &mut crate::config::layers::Layers<'_>) -> Option<OtlpConfig> {
    crate::config::layers::env_shortcut(l, from_env)
}

/// The OTLP sink from the `OTEL_EXPORTER_OTLP_*` variables: `Ok(None)` when
/// neither endpoint variable is set, or `OTEL_TRACES_EXPORTER=none`.
pub fn from_env(env: &HashMap<String, String>) -> Result<Option<OtlpConfig>, Vec<String>> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut errors = Vec::new();
    match get("OTEL_TRACES_EXPORTER") {
        Some(v) if v.eq_ignore_ascii_case("none") => return Ok(None),
        Some(v) if !v.split(',').any(|e| e.trim() == "otlp") => errors.push(format!(
            "OTEL_TRACES_EXPORTER={v}: llmtap exports traces only with otlp (or none)"
        )),
        _ => {}
    }
    let url = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(u), _) => check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", u).map(str::to_string),
        (None, Some(base)) => check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base).map(signal_url),
        (None, None) => return Ok(None),
    };
    let mut cfg = OtlpConfig::with_url(keep(url, &mut errors).unwrap_or_default());
    for (suffix, setting) in [
        ("PROTOCOL", Setting::Protocol),
        ("COMPRESSION", Setting::Compression),
        ("TIMEOUT", Setting::TimeoutMs),
        ("HEADERS", Setting::Headers),
        ("CERTIFICATE", Setting::Certificate),
    ] {
        // Signal-specific first, then the generic variable.
        let specific = format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}");
        let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
        let found = get(&specific)
            .map(|v| (specific.as_str(), v))
            .or_else(|| get(&generic).map(|v| (generic.as_str(), v)));
        if let Some((name, v)) = found {
            cfg.apply(setting, name, v, &mut errors);
        }
    }
    for name in ["CLIENT_KEY", "CLIENT_CERTIFICATE"] {
        for var in [
            format!("OTEL_EXPORTER_OTLP_TRACES_{name}"),
            format!("OTEL_EXPORTER_OTLP_{name}"),
        ] {
            if get(&var).is_some() {
                errors.push(format!(
                    "{var}: client certificates (mTLS) are not supported"
                ));
            }
        }
    }
    if let Some(v) = get("LLMTAP_OTLP_SEMCONV") {
        cfg.apply(Setting::Semconv, "LLMTAP_OTLP_SEMCONV", v, &mut errors);
    }
    done(cfg, errors).map(Some)
}

/// The keys of a `[[sinks]]` entry of kind `otlp`.
const TABLE_KEYS: [&str; 10] = [
    "name",
    "kind",
    "endpoint",
    "traces_endpoint",
    "protocol",
    "compression",
    "timeout",
    "certificate",
    "headers_env",
    "semconv",
];

/// One `[[sinks]]` entry of `kind = "otlp"`; `name` is the sink's name (for messages).
pub fn from_table(
    name: &str,
    t: &toml::Table,
    env: &HashMap<String, String>,
) -> Result<OtlpConfig, Vec<String>> {
    let at = |k: &str| format!("sinks.{name}.{k}");
    let mut errors: Vec<String> = t
        .keys()
        .filter(|k| !TABLE_KEYS.contains(&k.as_str()))
        .map(|k| format!("{}: unknown setting", at(k)))
        .collect();
    let text = |k: &str, errors: &mut Vec<String>| match t.get(k) {
        None => None,
        Some(toml::Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            errors.push(format!("{}: must be a string", at(k)));
            None
        }
    };
    let url = match (
        text("traces_endpoint", &mut errors),
        text("endpoint", &mut errors),
    ) {
        (Some(_), Some(_)) => Err(format!(
            "{}: set endpoint or traces_endpoint, not both",
            at("endpoint")
        )),
        (Some(u), None) => check_url(&at("traces_endpoint"), &u).map(str::to_string),
        (None, Some(b)) => check_url(&at("endpoint"), &b).map(signal_url),
        (None, None) => Err(format!("{}: required (or traces_endpoint)", at("endpoint"))),
    };
    let mut cfg = OtlpConfig::with_url(keep(url, &mut errors).unwrap_or_default());
    match t.get("timeout") {
        None => {}
        Some(toml::Value::Integer(ms)) => cfg.apply(
            Setting::TimeoutMs,
            &at("timeout"),
            &ms.to_string(),
            &mut errors,
        ),
        Some(toml::Value::String(v)) => cfg.apply(Setting::Timeout, &at("timeout"), v, &mut errors),
        Some(_) => errors.push(format!(
            "{}: milliseconds, or a string such as \"10s\"",
            at("timeout")
        )),
    }
    for (key, setting) in [
        ("protocol", Setting::Protocol),
        ("compression", Setting::Compression),
        ("certificate", Setting::Certificate),
        ("semconv", Setting::Semconv),
    ] {
        if let Some(v) = text(key, &mut errors) {
            cfg.apply(setting, &at(key), &v, &mut errors);
        }
    }
    if let Some(var) = text("headers_env", &mut errors) {
        match env.get(&var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            Some(v) => cfg.apply(Setting::Headers, &var, v, &mut errors),
            None => errors.push(format!(
                "{}: the variable {var} is not set",
                at("headers_env")
            )),
        }
    }
    done(cfg, errors)
}

fn keep<T>(r: Result<T, String>, errors: &mut Vec<String>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// An `http(s)://` URL without userinfo (a secret that would reach logs).
fn check_url<'a>(setting: &str, url: &'a str) -> Result<&'a str, String> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|_| format!("{setting}: not a URL: {}", crate::redact::url(url)))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!(
            "{setting}: must be an http:// or https:// URL (OTLP/HTTP), got {}",
            crate::redact::url(url)
        ));
    }
    if crate::redact::has_userinfo(url) {
        return Err(format!(
            "{setting}: credentials in the URL are not accepted; use the headers instead"
        ));
    }
    Ok(url)
}

/// A base endpoint plus `/v1/traces` (one slash between them).
pub fn signal_url(base: &str) -> String {
    format!("{}{TRACES_PATH}", base.trim_end_matches('/'))
}

fn protocol(setting: &str, v: &str) -> Result<Protocol, String> {
    match v {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Ok(Protocol::HttpJson),
        "grpc" => Err(format!(
            "{setting}=grpc: llmtap speaks OTLP over HTTP only; use http/protobuf \
             (the receiver's HTTP port, usually 4318)"
        )),
        other => Err(format!(
            "{setting}: {other:?} is not http/protobuf or http/json"
        )),
    }
}

fn compression(setting: &str, v: &str) -> Result<bool, String> {
    match v {
        "gzip" => Ok(true),
        "none" => Ok(false),
        other => Err(format!("{setting}: {other:?} is not gzip or none")),
    }
}

fn semconv(setting: &str, v: &str) -> Result<Semconv, String> {
    match v {
        "genai" => Ok(Semconv::Genai),
        "genai+openinference" => Ok(Semconv::GenaiOpenInference),
        "mlflow" => Ok(Semconv::Mlflow),
        other => Err(format!(
            "{setting}: {other:?} is not genai, genai+openinference or mlflow"
        )),
    }
}

/// A timeout in milliseconds; `0` means none (the pipeline's limit applies).
fn millis(setting: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(0) => Err(format!("{setting}: must be more than 0 milliseconds")),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => Err(format!("{setting}: {v:?} is not a number of milliseconds")),
    }
}

/// `250ms`, `10s`, `2m`.
fn duration(setting: &str, v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{setting}: {v:?} is not a duration such as \"10s\""))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => {
            return Err(format!(
                "{setting}: {v:?} is not a duration such as \"10s\""
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("{setting}: must be more than 0"));
    }
    Ok(d)
}

/// `k=v,k2=v2` (W3C baggage style), keys and values percent-decoded and
/// trimmed. An error names the entry by position, never its value.
pub fn headers(setting: &str, v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, entry) in v.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let Some((k, val)) = entry.split_once('=') else {
            return Err(format!("{setting}: entry {} has no '='", i + 1));
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s.trim())
                .decode_utf8()
                .map(|c| c.into_owned())
        };
        let (Ok(k), Ok(val)) = (decode(k), decode(val)) else {
            return Err(format!(
                "{setting}: entry {} is not UTF-8 once decoded",
                i + 1
            ));
        };
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(format!(
                "{setting}: entry {}: {k:?} is not a header name",
                i + 1
            ));
        }
        if http::HeaderValue::from_str(&val).is_err() {
            return Err(format!(
                "{setting}: entry {} ({k}): the value is not a valid header value",
                i + 1
            ));
        }
        out.push((k.to_ascii_lowercase(), val));
    }
    Ok(out)
}

/// Reads the extra CAs of a PEM file into `cfg` (checked as every CA file
/// of the configuration is, [`load_roots`]).
fn load_ca(cfg: &mut OtlpConfig, setting: &str, path: &str, errors: &mut Vec<String>) {
    let path = PathBuf::from(path);
    match load_roots(&path) {
        Ok(c) => {
            cfg.ca_certs = c;
            cfg.ca_path = Some(path);
        }
        Err(e) => errors.push(format!("{setting}: {e}")),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
