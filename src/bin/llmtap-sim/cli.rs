//! The command line: `serve` (the simulated provider) and `streams` (the
//! client that measures streams). The flags are a contract with the
//! benchmark script: keep them.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// A provider simulator (OpenAI chat completions, Anthropic messages) and a
/// stream client, for benchmarking llmtap.
#[derive(Parser, Debug)]
#[command(name = "llmtap-sim", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve simulated provider responses.
    Serve(ServeArgs),
    /// Open streams against a URL and report time to first token and gaps.
    Streams(StreamsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the first stdout line
    /// says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Delay before the response head of a plain call (ms).
    #[arg(long, default_value_t = 0.0)]
    pub latency_ms: f64,
    /// Delay before the first chunk of a stream (ms).
    #[arg(long, default_value_t = 0.0)]
    pub ttft_ms: f64,
    /// Content chunks of a stream (= completion tokens).
    #[arg(long, default_value_t = 20)]
    pub chunks: u64,
    /// Delay between chunks (ms, fractional allowed).
    #[arg(long, default_value_t = 0.0)]
    pub chunk_delay_ms: f64,
    /// Approximate size of the answer's text (bytes).
    #[arg(long, default_value_t = 400)]
    pub body_bytes: u64,
}

/// Which wire format `streams` speaks.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Openai,
    Anthropic,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StreamsArgs {
    /// Base URL, e.g. http://127.0.0.1:8080 (the API path is appended).
    #[arg(long)]
    pub url: String,
    /// Wire format and path: /v1/chat/completions or /v1/messages.
    #[arg(long, value_enum, default_value_t = Provider::Openai)]
    pub provider: Provider,
    /// Streams open at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Run for this many seconds (default 10 unless --total is given).
    #[arg(long, conflicts_with = "total")]
    pub duration: Option<f64>,
    /// Run this many streams in all.
    #[arg(long)]
    pub total: Option<u64>,
    /// Chunks per stream (sent as x-sim-chunks).
    #[arg(long, default_value_t = 20)]
    pub chunks: u64,
    /// Delay between chunks, ms (sent as x-sim-chunk-delay-ms).
    #[arg(long, default_value_t = 0.0)]
    pub chunk_delay_ms: f64,
    /// Time to first token, ms (sent as x-sim-ttft-ms).
    #[arg(long, default_value_t = 0.0)]
    pub ttft_ms: f64,
    /// Reuse keep-alive HTTP/1.1 connections, one per concurrent stream
    /// (default: a new connection per stream).
    #[arg(long)]
    pub connections: bool,
    /// Open --concurrency streams, print `holding N` once each has its first
    /// chunk, keep them open this many seconds, then close them and report.
    #[arg(long, conflicts_with_all = ["duration", "total"])]
    pub hold: Option<f64>,
    /// Model name to send.
    #[arg(long)]
    pub model: Option<String>,
    /// Tokio worker threads of the client.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}
