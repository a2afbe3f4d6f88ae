//! Configuration: command-line flags, environment, TOML file, defaults — in
//! that order of precedence — turned into one validated [`Config`].
//!
//! Loading is pure: the caller hands in the flags it parsed, a snapshot of the
//! environment ([`Env`], a plain map a test can build) and the file's text.
//! Every bad field is collected and reported together in one
//! [`ConfigError`], so an operator fixes a file in one pass.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A snapshot of the process environment (or a test's stand-in).
pub type Env = HashMap<String, String>;

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub admin_listen: Option<String>,
    pub config: Option<PathBuf>,
    pub log_format: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where traces go.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// Tracing switched off (`ENABLE_MLFLOW_TRACING=false`): a pure proxy.
    Disabled,
    /// OTLP/HTTP protobuf to an MLflow tracking server.
    Mlflow(MlflowConfig),
    /// OTLP-JSON lines under a directory, size-rotated (the embedded default).
    File(FileSinkConfig),
    /// OTLP/HTTP to any OpenTelemetry backend (`OTEL_EXPORTER_OTLP_*`).
    /// TEMPORARY wiring from branch i9-otlp until the multi-sink config lands.
    Otlp(crate::sinks::otlp::OtlpConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MlflowConfig {
    /// Base URL of the tracking server, without a trailing slash.
    pub tracking_uri: String,
    pub experiment: ExperimentRef,
    pub auth: MlflowAuth,
    /// Extra CAs trusted for the tracking server (`MLFLOW_TRACKING_SERVER_CERT_PATH`).
    pub server_ca: ExtraRoots,
}

/// CA certificates trusted in addition to the system's and the webpki roots,
/// read from a PEM file at config load (none by default).
#[derive(Clone, Default, PartialEq)]
pub struct ExtraRoots {
    /// The PEM file they came from.
    pub path: Option<PathBuf>,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for ExtraRoots {
    // The path and a count: DER bytes say nothing in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            None => f.write_str("None"),
            Some(p) => write!(f, "{} ({} certificates)", p.display(), self.certs.len()),
        }
    }
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

#[derive(Debug, Clone, PartialEq)]
pub struct FileSinkConfig {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub max_files: usize,
}

/// Bounds of the export pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub batch_max_spans: usize,
    pub batch_max_bytes: usize,
    pub batch_interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub parse_workers: usize,
    /// Where batches the sink refused for good are kept.
    pub dead_letter_dir: PathBuf,
    /// Size at which the dead-letter file is rotated.
    pub dead_letter_max_file_bytes: u64,
    /// Dead-letter files kept (current + rotated); the oldest go first.
    pub dead_letter_max_files: usize,
    /// Traces per second the sink may receive (none = no limit).
    pub max_traces_per_second: Option<f64>,
}

/// The disk spool between the parse workers and the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// `None`: fsync before a trace counts as written ("always");
    /// `Some(d)`: at most `d` after.
    pub fsync_interval: Option<Duration>,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// `/readyz` fails when the spool holds more than this share of `max_bytes`.
    pub ready_threshold: f64,
    /// With `fsync = "always"`: the longest a response's end waits for its
    /// call's fsync before it goes out anyway.
    pub max_hold: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Default upstream base URL (scheme, authority, optional path prefix).
    pub upstream: Uri,
    /// Extra CAs trusted for the default upstream and every route's.
    pub upstream_ca: ExtraRoots,
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for response headers or between body frames.
    pub idle_timeout: Option<Duration>,
    /// Total time allowed for a whole exchange; none by default (long streams are normal).
    pub request_timeout: Option<Duration>,
    /// Cap of each captured body copy (request and response).
    pub max_capture_bytes: usize,
    /// Cap of all captured bytes held in memory at once; past it new calls
    /// are proxied without a capture ([`crate::capture_budget`]).
    pub max_inflight_capture_bytes: usize,
    /// Ask OpenAI chat/completions streams for usage and hide the extra chunk.
    pub inject_stream_usage: bool,
    /// Non-default upstreams, chosen by path prefix and/or Host.
    pub routes: Vec<RouteConfig>,
    pub sink: SinkConfig,
    pub export: ExportConfig,
    /// `None` when spooling is off: traces then live in memory only.
    pub spool: Option<SpoolSettings>,
    pub service_name: String,
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT: how long in-flight calls, then trace export, may take.
    pub shutdown_grace: Duration,
    /// Client connection limits and timeouts of both listeners.
    pub connections: ConnectionSettings,
}

/// Every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8788";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8789";
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com";

/// Keys the file may hold, by table. Anything else is reported.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "admin_listen",
            "service_name",
            "log_format",
            "shutdown_grace",
            "max_connections",
            "admin_max_connections",
            "header_read_timeout",
            "keepalive_timeout",
            "client_write_timeout",
        ],
    ),
    (
        "upstream",
        &[
            "url",
            "connect_timeout",
            "idle_timeout",
            "request_timeout",
            "ca_file",
        ],
    ),
    (
        "capture",
        &[
            "max_body_bytes",
            "max_inflight_bytes",
            "inject_stream_usage",
        ],
    ),
    (
        "mlflow",
        &[
            "tracking_uri",
            "experiment_id",
            "experiment_name",
            "enabled",
            "tracking_server_cert_path",
        ],
    ),
    ("file_sink", &["dir", "max_file_bytes", "max_files"]),
    (
        "spool",
        &[
            "enabled",
            "dir",
            "fsync",
            "max_bytes",
            "segment_bytes",
            "ready_threshold",
            "max_hold",
        ],
    ),
    (
        "export",
        &[
            "queue_capacity",
            "queue_max_bytes",
            "batch_max_spans",
            "batch_max_bytes",
            "batch_interval",
            "retry_initial",
            "retry_max",
            "max_attempts",
            "timeout",
            "parse_workers",
            "dead_letter_dir",
            "dead_letter_max_file_bytes",
            "dead_letter_max_files",
            "max_traces_per_second",
        ],
    ),
];

/// Layered lookup of one setting: flag, then env, then file, then default.
struct Layers<'a> {
    env: &'a Env,
    file: toml::Table,
    errors: Vec<String>,
}

impl Layers<'_> {
    fn file_value(&self, table: &str, key: &str) -> Option<&toml::Value> {
        self.file.get(table)?.as_table()?.get(key)
    }

    /// A string setting; file values must be strings.
    fn string(&mut self, flag: Option<&str>, env: &[&str], at: (&str, &str)) -> Option<String> {
        match flag {
            Some(v) => Some(v.to_string()),
            None => self.sourced(env, at).map(|(v, _)| v),
        }
    }

    /// A string setting without a flag, and where it came from: the
    /// variable's name or `table.key`.
    fn sourced(&mut self, env: &[&str], at: (&str, &str)) -> Option<(String, String)> {
        for name in env {
            if let Some(v) = self.env.get(*name).filter(|v| !v.is_empty()) {
                return Some((v.clone(), name.to_string()));
            }
        }
        match self.file_value(at.0, at.1) {
            Some(toml::Value::String(s)) => Some((s.clone(), format!("{}.{}", at.0, at.1))),
            Some(other) => {
                let msg = format!(
                    "{}.{}: expected a string, got {}",
                    at.0,
                    at.1,
                    other.type_str()
                );
                self.errors.push(msg);
                None
            }
            None => None,
        }
    }

    /// A setting parsed from text (env) or taken from the file (string or integer).
    fn parsed<T>(
        &mut self,
        env: Option<&str>,
        at: (&str, &str),
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        if let Some(name) = env {
            if let Some(v) = self.env.get(name).filter(|v| !v.is_empty()) {
                return match parse(v) {
                    Ok(t) => t,
                    Err(e) => {
                        self.errors.push(format!("{name}={v:?}: {e}"));
                        default
                    }
                };
            }
        }
        let text = match self.file_value(at.0, at.1) {
            None => return default,
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) => i.to_string(),
            Some(toml::Value::Boolean(b)) => b.to_string(),
            Some(toml::Value::Float(f)) => f.to_string(),
            Some(other) => {
                let msg = format!("{}.{}: unexpected {}", at.0, at.1, other.type_str());
                self.errors.push(msg);
                return default;
            }
        };
        match parse(&text) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(format!("{}.{}: {e}", at.0, at.1));
                default
            }
        }
    }

    /// A PEM file of CA certificates ([`load_roots`]); a bad one is reported
    /// under the variable or key that named it.
    fn roots(&mut self, env: &str, at: (&str, &str)) -> ExtraRoots {
        let Some((path, source)) = self.sourced(&[env], at) else {
            return ExtraRoots::default();
        };
        let path = PathBuf::from(path);
        match load_roots(&path) {
            Ok(certs) => ExtraRoots {
                path: Some(path),
                certs,
            },
            Err(e) => {
                self.errors.push(format!("{source}: {e}"));
                ExtraRoots::default()
            }
        }
    }
}

/// Reads the CA certificates of a PEM file; other PEM sections (keys, CRLs)
/// are skipped. A file that cannot be read, holds no certificate, or holds
/// one rustls cannot use as a trust anchor is an error naming the path.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in it"));
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| format!("{shown}: certificate {} is not a usable CA ({e})", i + 1))?;
    }
    Ok(certs)
}

/// Parses a duration such as `250ms`, `10s`, `5m`, `1h`; `0`/`none`/`off` mean "no limit".
pub fn parse_duration_opt(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if matches!(s, "0" | "none" | "off" | "") {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration (try 10s, 500ms, 5m): {s:?}"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown duration unit {u:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_opt(s)?.ok_or_else(|| "must be greater than zero".to_string())
}

/// Parses a byte size: `1048576`, `512KiB`, `10MiB`, `1GiB`, `1TiB` (also
/// KB/MB/GB/TB as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a size (try 10MiB): {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_string())
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("not a positive integer: {s:?}")),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("not a boolean: {s:?}")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("not a socket address (like 127.0.0.1:8788): {s:?}"))
}

/// Parses an upstream base URL: http(s) with an authority, no query, no
/// userinfo. Messages show the URL only through [`crate::redact::url`].
pub fn parse_base_url(s: &str) -> Result<Uri, String> {
    if crate::redact::has_userinfo(s) {
        return Err(format!(
            "a URL with credentials (user:password@) is not supported: put the credential in the agent's Authorization header ({})",
            crate::redact::url(s)
        ));
    }
    let uri = parse_http_url(s)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("a URL with credentials (user:password@) is not supported".into());
    }
    Ok(uri)
}

/// An http(s) URL with an authority and no query; userinfo is left to the caller.
fn parse_http_url(s: &str) -> Result<Uri, String> {
    let shown = crate::redact::url(s);
    let uri: Uri = s
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("not a URL: {shown} ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL must start with http:// or https://: {shown}")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL has no host: {shown}"));
    }
    if uri.query().is_some() {
        return Err(format!("must not have a query (not shown): {shown}"));
    }
    Ok(uri)
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

/// Reads the config file named by the flag or `LLMTAP_CONFIG`, then [`resolve`]s.
pub fn load(flags: &Flags, env: &Env) -> Result<Config, ConfigError> {
    let path = flags.config.clone().or_else(|| {
        env.get("LLMTAP_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let text = match &path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError(vec![format!("config file {}: {e}", p.display())]))?,
        ),
        None => None,
    };
    resolve(flags, env, text.as_deref())
}

/// Builds the [`Config`] from flags, environment and the file's text.
pub fn resolve(flags: &Flags, env: &Env, file_text: Option<&str>) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let file = match file_text.map(toml::from_str::<toml::Table>) {
        None => toml::Table::new(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err(ConfigError(vec![toml_error(&e, file_text)])),
    };
    check_known_keys(&file, &mut errors);
    let mut l = Layers { env, file, errors };

    let listen = l.string(
        flags.listen.as_deref(),
        &["LLMTAP_LISTEN"],
        ("server", "listen"),
    );
    let admin = l.string(
        flags.admin_listen.as_deref(),
        &["LLMTAP_ADMIN_LISTEN"],
        ("server", "admin_listen"),
    );
    let upstream = l.string(
        flags.upstream.as_deref(),
        &["LLMTAP_UPSTREAM"],
        ("upstream", "url"),
    );
    let upstream_ca = l.roots("LLMTAP_UPSTREAM_CA_FILE", ("upstream", "ca_file"));
    let log_format = l.string(
        flags.log_format.as_deref(),
        &["LLMTAP_LOG_FORMAT"],
        ("server", "log_format"),
    );
    let service_name = l
        .string(
            None,
            &["LLMTAP_SERVICE_NAME", "OTEL_SERVICE_NAME"],
            ("server", "service_name"),
        )
        .unwrap_or_else(|| "llmtap".to_string());

    let listen =
        parse_addr(listen.as_deref().unwrap_or(DEFAULT_LISTEN)).map_err(|e| format!("listen: {e}"));
    let admin_listen = parse_addr(admin.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN))
        .map_err(|e| format!("admin_listen: {e}"));
    let upstream = parse_base_url(upstream.as_deref().unwrap_or(DEFAULT_UPSTREAM))
        .map_err(|e| format!("upstream: {e}"));
    let log_format = match log_format.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(o) => Err(format!("log_format: expected text or json, got {o:?}")),
    };

    let shutdown_grace = l.parsed(
        None,
        ("server", "shutdown_grace"),
        Duration::from_secs(30),
        duration_max(HOUR),
    );
    let connect_timeout = l.parsed(
        Some("LLMTAP_CONNECT_TIMEOUT"),
        ("upstream", "connect_timeout"),
        Duration::from_secs(10),
        duration_max(10 * MINUTE),
    );
    let idle_timeout = l.parsed(
        Some("LLMTAP_IDLE_TIMEOUT"),
        ("upstream", "idle_timeout"),
        Some(Duration::from_secs(300)),
        duration_opt_max(DAY),
    );
    let request_timeout = l.parsed(
        Some("LLMTAP_REQUEST_TIMEOUT"),
        ("upstream", "request_timeout"),
        None,
        duration_opt_max(DAY),
    );
    let inject_stream_usage = l.parsed(
        Some("LLMTAP_INJECT_STREAM_USAGE"),
        ("capture", "inject_stream_usage"),
        true,
        parse_bool,
    );
    let mut route_errors = Vec::new();
    let routes = routes::parse(&l.file, &mut route_errors);
    l.errors.extend(route_errors);
    let max_capture = l.parsed(
        Some("LLMTAP_MAX_CAPTURE_BYTES"),
        ("capture", "max_body_bytes"),
        10 << 20,
        mem_bytes_max(GIB),
    );
    let max_inflight = l.parsed(
        Some("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES"),
        ("capture", "max_inflight_bytes"),
        256 << 20,
        mem_bytes_max(64 * GIB),
    );

    let export = ExportConfig {
        queue_capacity: l.parsed(
            None,
            ("export", "queue_capacity"),
            10_000,
            count_max(1_000_000),
        ),
        queue_max_bytes: l.parsed(
            None,
            ("export", "queue_max_bytes"),
            256 << 20,
            mem_bytes_max(16 * GIB),
        ),
        batch_max_spans: l.parsed(None, ("export", "batch_max_spans"), 256, count_max(100_000)),
        batch_max_bytes: l.parsed(
            None,
            ("export", "batch_max_bytes"),
            4 << 20,
            mem_bytes_max(GIB),
        ),
        batch_interval: l.parsed(
            None,
            ("export", "batch_interval"),
            Duration::from_secs(1),
            duration_max(HOUR),
        ),
        retry_initial: l.parsed(
            None,
            ("export", "retry_initial"),
            Duration::from_millis(200),
            duration_max(HOUR),
        ),
        retry_max: l.parsed(
            None,
            ("export", "retry_max"),
            Duration::from_secs(30),
            duration_max(HOUR),
        ),
        max_attempts: l.parsed(None, ("export", "max_attempts"), 10, |s| {
            count_max(1_000)(s).map(|n| n as u32)
        }),
        timeout: l.parsed(
            None,
            ("export", "timeout"),
            Duration::from_secs(30),
            duration_max(HOUR),
        ),
        parse_workers: l.parsed(None, ("export", "parse_workers"), 1, count_max(64)),
        max_traces_per_second: l.parsed(
            Some("LLMTAP_MAX_TRACES_PER_SECOND"),
            ("export", "max_traces_per_second"),
            None,
            rate_max(1e6),
        ),
        dead_letter_dir: l
            .string(
                None,
                &["LLMTAP_DEAD_LETTER_DIR"],
                ("export", "dead_letter_dir"),
            )
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("llmtap-deadletter")),
        dead_letter_max_file_bytes: l.parsed(
            None,
            ("export", "dead_letter_max_file_bytes"),
            64 << 20,
            bytes_max(16 * GIB),
        ),
        dead_letter_max_files: l.parsed(
            None,
            ("export", "dead_letter_max_files"),
            10,
            count_max(10_000),
        ),
    };

    let sink = resolve_sink(&mut l);
    let spool = resolve_spool(&mut l);
    let connections = connections::resolve(&mut l);
    let mut errors = l.errors;
    if max_inflight < max_capture {
        errors.push(format!(
            "capture.max_inflight_bytes ({max_inflight}) must be at least capture.max_body_bytes ({max_capture}): one call's capture must fit"
        ));
    }
    match (listen, admin_listen, upstream, log_format) {
        (Ok(listen), Ok(admin_listen), Ok(upstream), Ok(log_format)) if errors.is_empty() => {
            Ok(Config {
                listen,
                admin_listen,
                upstream,
                upstream_ca,
                connect_timeout,
                idle_timeout,
                request_timeout,
                max_capture_bytes: max_capture,
                max_inflight_capture_bytes: max_inflight,
                inject_stream_usage,
                routes,
                sink,
                export,
                spool,
                service_name,
                log_format,
                shutdown_grace,
                connections,
            })
        }
        (listen, admin, upstream, log_format) => {
            errors.extend(listen.err());
            errors.extend(admin.err());
            errors.extend(upstream.err());
            errors.extend(log_format.err());
            Err(ConfigError(errors))
        }
    }
}

fn resolve_spool(l: &mut Layers<'_>) -> Option<SpoolSettings> {
    let enabled = l.parsed(Some("LLMTAP_SPOOL"), ("spool", "enabled"), true, parse_bool);
    let dir = l
        .string(None, &["LLMTAP_SPOOL_DIR"], ("spool", "dir"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("llmtap-spool"));
    let fsync_interval = l.parsed(
        Some("LLMTAP_SPOOL_FSYNC"),
        ("spool", "fsync"),
        Some(Duration::from_millis(100)),
        |s| match s.trim() {
            "always" => Ok(None),
            other => duration_max(10 * MINUTE)(other).map(Some),
        },
    );
    let max_bytes = l.parsed(
        Some("LLMTAP_SPOOL_MAX_BYTES"),
        ("spool", "max_bytes"),
        1 << 30,
        bytes_max(64 * TIB),
    );
    let segment_bytes = l.parsed(None, ("spool", "segment_bytes"), 16 << 20, bytes_max(GIB));
    let ready_threshold = l.parsed(None, ("spool", "ready_threshold"), 0.8, |s| {
        match s.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(format!("expected a fraction between 0 and 1, got {s:?}")),
        }
    });
    let max_hold = l.parsed(
        Some("LLMTAP_SPOOL_MAX_HOLD"),
        ("spool", "max_hold"),
        Duration::from_secs(2),
        duration_max(MINUTE),
    );
    enabled.then_some(SpoolSettings {
        dir,
        fsync_interval,
        max_bytes,
        segment_bytes,
        ready_threshold,
        max_hold,
    })
}

fn resolve_sink(l: &mut Layers<'_>) -> SinkConfig {
    let enabled = l.parsed(
        Some("ENABLE_MLFLOW_TRACING"),
        ("mlflow", "enabled"),
        true,
        parse_bool,
    );
    let uri = l.string(None, &["MLFLOW_TRACKING_URI"], ("mlflow", "tracking_uri"));
    let exp_id = l.string(None, &["MLFLOW_EXPERIMENT_ID"], ("mlflow", "experiment_id"));
    let exp_name = l.string(
        None,
        &["MLFLOW_EXPERIMENT_NAME"],
        ("mlflow", "experiment_name"),
    );
    let file = FileSinkConfig {
        dir: l
            .string(None, &["LLMTAP_TRACE_DIR"], ("file_sink", "dir"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("llmtap-traces")),
        max_file_bytes: l.parsed(
            None,
            ("file_sink", "max_file_bytes"),
            64 << 20,
            bytes_max(16 * GIB),
        ),
        max_files: l.parsed(None, ("file_sink", "max_files"), 20, count_max(10_000)),
    };
    if !enabled {
        return SinkConfig::Disabled;
    }
    // TEMPORARY (branch i9-otlp): the OTLP env shortcut, when MLflow is not set.
    if uri.is_none() {
        match crate::sinks::otlp::config::from_env(l.env) {
            Ok(Some(otlp)) => return SinkConfig::Otlp(otlp),
            Ok(None) => {}
            Err(errors) => {
                l.errors.extend(errors);
                return SinkConfig::Disabled;
            }
        }
    }
    let Some(uri) = uri else {
        return SinkConfig::File(file);
    };
    let (tracking_uri, userinfo) = match parse_tracking_uri(&uri) {
        Ok((u, creds)) => (u.to_string().trim_end_matches('/').to_string(), creds),
        Err(e) => {
            let hint = if uri == "databricks" {
                " (MLFLOW_TRACKING_URI=databricks is not supported yet)"
            } else {
                ""
            };
            l.errors.push(format!("MLFLOW_TRACKING_URI: {e}{hint}"));
            return SinkConfig::Disabled;
        }
    };
    let experiment = match (exp_id, exp_name) {
        (Some(id), _) => ExperimentRef::Id(id),
        (None, Some(name)) => ExperimentRef::Name(name),
        (None, None) => ExperimentRef::Name("llmtap".into()),
    };
    let token = l.env.get("MLFLOW_TRACKING_TOKEN").filter(|v| !v.is_empty());
    let user = l
        .env
        .get("MLFLOW_TRACKING_USERNAME")
        .filter(|v| !v.is_empty());
    let password = l.env.get("MLFLOW_TRACKING_PASSWORD").cloned();
    // Explicit settings win over credentials in the URL.
    let auth = match (token, user, userinfo) {
        (Some(t), _, _) => MlflowAuth::Bearer(t.clone()),
        (None, Some(u), _) => MlflowAuth::Basic {
            user: u.clone(),
            password: password.unwrap_or_default(),
        },
        (None, None, Some((user, password))) => MlflowAuth::Basic { user, password },
        (None, None, None) => MlflowAuth::None,
    };
    let server_ca = l.roots(
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        ("mlflow", "tracking_server_cert_path"),
    );
    SinkConfig::Mlflow(MlflowConfig {
        tracking_uri,
        experiment,
        auth,
        server_ca,
    })
}

/// A TOML syntax error without the offending line (it may hold a secret):
/// the message and where.
fn toml_error(e: &toml::de::Error, text: Option<&str>) -> String {
    let at = e.span().zip(text).map(|(span, text)| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    format!(
        "config file: {}{}",
        e.message().trim_end(),
        at.unwrap_or_default()
    )
}

fn check_known_keys(file: &toml::Table, errors: &mut Vec<String>) {
    for (table, value) in file {
        if table == "routes" {
            continue; // checked by routes::parse
        }
        let Some(keys) = KNOWN.iter().find(|(t, _)| t == table).map(|(_, k)| *k) else {
            errors.push(format!("unknown table [{table}]"));
            continue;
        };
        let Some(t) = value.as_table() else {
            errors.push(format!("{table}: expected a table"));
            continue;
        };
        for key in t.keys() {
            if !keys.contains(&key.as_str()) {
                errors.push(format!("{table}.{key}: unknown key"));
            }
        }
    }
}

mod connections;
mod limits;
mod routes;
pub use connections::ConnectionSettings;
pub use limits::{
    bytes_max, count_max, duration_max, duration_opt_max, mem_bytes_max, rate_max, DAY, GIB, HOUR,
    MINUTE, TIB,
};
pub use routes::{select as select_route, RouteConfig};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod url_tests;
