//! The `llmtap` command: parse flags, load the configuration, start logging,
//! serve until SIGTERM or SIGINT, then shut down gracefully.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llmtap::config::{self, Flags, LogFormat};

/// mimalloc instead of glibc's malloc: with tracing on, glibc's per-thread
/// arenas grew llmtap to ~150 MB resident after a minute at 7k calls/s,
/// mimalloc held ~30 MB for the same load, at the same or lower CPU
/// (docs/benchmarks.md). Built without transparent huge pages (`no_thp`):
/// with them an idle llmtap held ~25 MB instead of ~13 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A sidecar proxy that traces LLM traffic into MLflow.
#[derive(Parser, Debug)]
#[command(name = "llmtap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Send traces kept on disk (the embedded default's OTLP-JSON files, or a
    /// dead-letter file) to the configured sink; safe to repeat.
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Files or directories (their *.jsonl files) to replay.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// TOML configuration file [env LLMTAP_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Default, Clone)]
struct ServeArgs {
    /// Address agents connect to [env LLMTAP_LISTEN; default 127.0.0.1:8788]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Upstream base URL [env LLMTAP_UPSTREAM; default https://api.openai.com]
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Admin address: /healthz, /readyz, /metrics [env LLMTAP_ADMIN_LISTEN; default 127.0.0.1:8789]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// TOML configuration file [env LLMTAP_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: text or json [env LLMTAP_LOG_FORMAT; default text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM and SIGINT, listened for from the moment this is made: made
/// before llmtap starts, so a signal sent as soon as it logs that it
/// listens is never taken by the default action (exit without draining).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("llmtap: cannot start the runtime: {e}");
            None
        }
    }
}

/// Configuration (exit status 2 when it is bad), logging, and the runtime.
fn setup(flags: &Flags) -> Result<(config::Config, tokio::runtime::Runtime), ExitCode> {
    let env: config::Env = std::env::vars().collect();
    let cfg = config::load(flags, &env).map_err(|e| {
        eprintln!("llmtap: {e}");
        ExitCode::from(2)
    })?;
    init_logging(cfg.log_format);
    let runtime = runtime().ok_or(ExitCode::FAILURE)?;
    Ok((cfg, runtime))
}

/// `llmtap replay PATH...`
fn replay(args: ReplayArgs) -> ExitCode {
    let flags = Flags {
        config: args.config,
        ..Flags::default()
    };
    let (cfg, runtime) = match setup(&flags) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match runtime.block_on(llmtap::pipeline::replay::replay(&cfg, &args.paths)) {
        Ok(r) => {
            println!(
                "replayed {} lines ({} unreadable): {} spans, {} exported, {} dead-lettered, {} dropped, {} left in the spool",
                r.lines, r.bad_lines, r.spans, r.exported, r.dead_lettered, r.dropped, r.kept
            );
            if r.exported == r.spans && r.bad_lines == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("llmtap replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Replay(r)) => return replay(r),
        None => cli.serve,
    };
    let flags = Flags {
        listen: args.listen,
        upstream: args.upstream,
        admin_listen: args.admin_listen,
        config: args.config,
        log_format: args.log_format,
    };
    let (cfg, runtime) = match setup(&flags) {
        Ok(s) => s,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for signals");
                return ExitCode::FAILURE;
            }
        };
        let running = match llmtap::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let first = signals.next().await;
        tracing::info!(
            signal = first,
            "shutting down: draining in-flight calls and traces"
        );
        running.trigger_shutdown();
        tokio::select! {
            _ = running.wait() => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            second = signals.next() => {
                tracing::warn!(signal = second, "second signal: exiting now");
                ExitCode::from(130)
            }
        }
    })
}
