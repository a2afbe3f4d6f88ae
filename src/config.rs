//! Configuration: command-line flags, environment, TOML file, defaults — in
//! that order of precedence — turned into one validated [`Config`].
//!
//! Loading is pure: the caller hands in the flags it parsed, a snapshot of the
//! environment ([`Env`], a plain map a test can build) and the file's text.
//! Every bad field is collected and reported together in one
//! [`ConfigError`], so an operator fixes a file in one pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

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
    /// Record each streamed chunk as an `mlflow.chunk.item.N` span event,
    /// as MLflow's OpenAI autologging does ([`crate::trace::chunks`]).
    pub chunk_events: bool,
    /// The credential llmtap adds to the default upstream's requests, if any.
    pub upstream_credential: Option<CredentialConfig>,
    /// Non-default upstreams, chosen by path prefix and/or Host.
    pub routes: Vec<RouteConfig>,
    /// Where traces go ([`crate::sinks::registry`]); empty when tracing is
    /// off (`ENABLE_MLFLOW_TRACING=false`): a pure proxy.
    pub sinks: Vec<SinkEntry>,
    pub export: ExportConfig,
    /// `None` when spooling is off: traces then live in memory only.
    pub spool: Option<SpoolSettings>,
    pub service_name: String,
    pub log_format: LogFormat,
    /// One `proxied` line per call at `info` (`server.access_log`).
    pub access_log: bool,
    /// On SIGTERM/SIGINT: how long in-flight calls, then trace export, may take.
    pub shutdown_grace: Duration,
    /// Client connection limits and timeouts of both listeners.
    pub connections: ConnectionSettings,
    /// How conversations are recognised (`[sessions]`).
    pub sessions: crate::session::SessionConfig,
    /// Prices and the cost header (`[cost]`, `[[prices]]`).
    pub cost: CostSettings,
    /// Bounds of user feedback ([`crate::feedback`]).
    pub feedback: FeedbackSettings,
    /// Capture modes, redaction and sampling (`[privacy]`).
    pub privacy: crate::privacy::Settings,
    /// `[environment]` resource attributes and the `[context]` switches
    /// ([`crate::environment`]).
    pub context: crate::environment::ContextSettings,
}

impl Config {
    /// What every sink is built with ([`crate::sinks::Context`]).
    pub fn sink_context(&self) -> crate::sinks::Context {
        crate::sinks::Context {
            connect_timeout: self.connect_timeout,
            timeout: self.export.timeout,
            service_name: self.service_name.clone(),
        }
    }
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
            "access_log",
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
            // credential::KEYS
            "credential",
            "credential_header",
            "credential_override",
            "credential_check_interval",
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
            "source_metadata",
        ],
    ),
    ("file_sink", &["dir", "max_file_bytes", "max_files"]),
    ("sessions", sessions::KEYS),
    ("cost", cost::KEYS),
    ("trace", &["chunk_events"]),
    ("environment", crate::environment::ENVIRONMENT_KEYS),
    ("context", crate::environment::CONTEXT_KEYS),
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
    (
        "feedback",
        &["max_pending", "max_pending_bytes", "max_wait"],
    ),
    ("privacy", privacy::KEYS),
];

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
    let context = crate::environment::resolve(&mut l);
    let service_name = l
        .string(
            None,
            &["LLMTAP_SERVICE_NAME", "OTEL_SERVICE_NAME"],
            ("server", "service_name"),
        )
        .or_else(|| context.resource_service_name.clone())
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
    let access_log = l.parsed(
        Some("LLMTAP_ACCESS_LOG"),
        ("server", "access_log"),
        false,
        parse_bool,
    );
    let chunk_events = l.parsed(
        Some("LLMTAP_CHUNK_EVENTS"),
        ("trace", "chunk_events"),
        false,
        parse_bool,
    );
    let mut route_errors = Vec::new();
    let routes = routes::parse(&l.file, env, &mut route_errors);
    let upstream_table = l.file.get("upstream").and_then(|u| u.as_table());
    let upstream_credential = match upstream_table {
        Some(t) => credential::Raw::from_table("upstream", t, &mut route_errors),
        None => credential::Raw::default(),
    }
    .with_env(env)
    .resolve(env, &mut route_errors);
    if let (Some(c), Ok(u)) = (&upstream_credential, &upstream) {
        credential::check_upstream("upstream", c, u, &mut route_errors);
    }
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

    let sinks = resolve_sinks(&mut l);
    let spool = resolve_spool(&mut l);
    let connections = connections::resolve(&mut l);
    let sessions = sessions::resolve(&mut l);
    let cost = cost::resolve(&mut l);
    let feedback = feedback::resolve(&mut l);
    let privacy = privacy::resolve(&mut l);
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
                chunk_events,
                upstream_credential,
                routes,
                sinks,
                export,
                spool,
                service_name,
                log_format,
                access_log,
                shutdown_grace,
                connections,
                sessions,
                cost,
                feedback,
                privacy,
                context,
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

/// The configured sinks; none when `ENABLE_MLFLOW_TRACING=false` (read
/// anyway, so a bad setting is reported either way).
fn resolve_sinks(l: &mut Layers<'_>) -> Vec<SinkEntry> {
    let enabled = l.parsed(
        Some("ENABLE_MLFLOW_TRACING"),
        ("mlflow", "enabled"),
        true,
        parse_bool,
    );
    let sinks = crate::sinks::registry::resolve(l);
    match enabled {
        true => sinks,
        false => vec![],
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
        if table == "routes" || table == "sinks" || table == "prices" {
            continue; // checked by routes::parse, the sink registry, cost::resolve
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
pub mod cost;
pub mod credential;
mod feedback;
pub mod layers;
pub mod limits;
mod privacy;
mod routes;
pub mod sessions;
pub use crate::sinks::registry::{SinkEntry, SinkSpec};
pub use connections::ConnectionSettings;
pub use cost::CostSettings;
pub use credential::CredentialConfig;
pub use feedback::FeedbackSettings;
pub use layers::{
    load_roots, parse_base_url, parse_bytes, parse_duration_opt, Env, ExtraRoots, Layers,
};
use layers::{parse_addr, parse_bool};
pub use limits::{
    bytes_max, count_max, duration_max, duration_opt_max, mem_bytes_max, rate_max, DAY, GIB, HOUR,
    MINUTE, TIB,
};
pub use routes::{select as select_route, RouteConfig};

#[cfg(test)]
mod sinks_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod url_tests;
