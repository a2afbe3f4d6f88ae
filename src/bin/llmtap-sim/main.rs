//! `llmtap-sim`: a provider simulator and a stream client for benchmarks.
//!
//! - `serve`: OpenAI-compatible chat completions and Anthropic messages,
//!   plain and streamed, with configurable latency, time to first token,
//!   chunks, inter-chunk delay and body size (flags, or per request by
//!   `x-sim-*` headers). See docs/benchmarks.md.
//! - `streams`: opens streams against a URL and prints, as one JSON object,
//!   the time to first token and the gaps between chunks seen at the client.
//!
//! How fast `serve` is alone: see the `serve` module.
#![forbid(unsafe_code)]

mod bodies;
mod cli;
mod fd_limit;
mod params;
mod percentiles;
mod serve;
mod sse;
mod stream_body;
mod stream_client;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    fd_limit::raise();
    let threads = match &cli.command {
        cli::Command::Serve(a) => a.threads,
        cli::Command::Streams(a) => a.threads,
    };
    // One thread: a current-thread runtime (no work-stealing, no wake-ups
    // across threads), measurably faster than a one-worker pool.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmtap-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Streams(args) => stream_client::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmtap-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
