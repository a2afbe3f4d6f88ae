//! The worst-case resident set of llmtap under a configuration: the formula
//! the README's "Memory" section documents, written once so that the tests
//! check the binary against the very formula a container is sized by.
//!
//! ```text
//! base + capture.max_inflight_bytes
//!      + parse_workers x (max(journal read batch, 2 x cap) + 24 x cap)
//!      + 4 x cap                          the journal writer, one record
//!      + 2 x batch_max_bytes + 6 x cap    parsed spans not yet spooled (spool on:
//!                                         per parse worker; off: the span queue)
//!      + 4 x batch_max_bytes              one batch in delivery
//!      + (1 + sinks) x 4 MiB               the spools' tails (spool on)
//!      + sinks x 4 x 4 MiB                 the span handoffs (spool on)
//!      + connections x PER_CONNECTION     hyper's buffers (HTTP/2: PER_H2_CONNECTION)
//!      + cap x injected calls             requests read whole to add usage
//!      + (max_histories + max_responses) x PER_SESSION_ENTRY   the session recogniser
//!      + feedback sinks x feedback.max_pending_bytes            feedback waiting (mlflow, databricks)
//! ```

use crate::config::Config;
use crate::parse::budget::PARSE_FACTOR;
use crate::pipeline::handoff::HANDOFF_BYTES;
use crate::pipeline::journal::READ_BYTES;
use crate::pipeline::spool::TAIL_BYTES;
use crate::pipeline::SPAN_QUEUE_BATCHES;

/// The process at rest: binary, runtime, TLS roots, allocator (17 MiB
/// measured idle, with margin).
pub const BASE: u64 = 32 << 20;

/// One open HTTP/1.1 connection's buffers (hyper's read and write buffers,
/// capped at 64 KiB each, and the upstream side's; 0.25 to 0.3 MiB measured
/// per connection with 1 MiB bodies in transit).
pub const PER_CONNECTION: u64 = 512 << 10;

/// One open HTTP/2 connection's worst case: its 1 MiB receive window and up
/// to 32 streams with 64 KiB of response buffered ahead of the client's
/// window and 16 KiB of headers each (about 3.6 MiB; `src/server.rs`). In
/// [`worst_case_rss`] an HTTP/2 connection counts as this many HTTP/1.1 ones.
pub const PER_H2_CONNECTION: u64 = 4 << 20;

/// One entry of the session recogniser's maps at worst: ~110 bytes of map
/// and LRU overhead plus a session id of its own (at most 256 bytes;
/// usually shared by a session's entries). `docs/sessions.md`.
pub const PER_SESSION_ENTRY: u64 = 110 + 256;

/// What a parse worker holds besides the parse budget, in capture caps: the
/// decoded text and the span's copies of it (input, output, OTLP encoding)
/// for both bodies; measured at most ~21 x cap in all with the budget.
const COPIES: u64 = 8;

/// The worst-case RSS with `connections` open HTTP/1.1 connections (count
/// an HTTP/2 one as `PER_H2_CONNECTION / PER_CONNECTION` of them),
/// `injected` of them calls whose request is read whole to add
/// `stream_options`.
pub fn worst_case_rss(cfg: &Config, connections: usize, injected: usize) -> u64 {
    let cap = cfg.max_capture_bytes as u64;
    let batch = cfg.export.batch_max_bytes as u64;
    let workers = cfg.export.parse_workers as u64;
    let read_batch = (READ_BYTES as u64).max(2 * cap);
    let parse = read_batch + (PARSE_FACTOR as u64 + COPIES) * cap;
    let journal_writer = 4 * cap;
    // Spool on, each worker holds its group of spans and their encoding;
    // spool off, the workers share one span queue.
    let holders = match cfg.spool {
        Some(_) => workers.max(1),
        None => 1,
    };
    let span_queue = holders.saturating_mul(SPAN_QUEUE_BATCHES as u64 * batch + 6 * cap);
    let delivery = 4 * batch;
    let sessions = (cfg.sessions.max_prefixes as u64)
        .saturating_add(cfg.sessions.max_responses as u64)
        .saturating_mul(PER_SESSION_ENTRY);
    let feedback_sinks = cfg
        .sinks
        .iter()
        .filter(|s| crate::feedback::takes_feedback(s.spec.kind()))
        .count() as u64;
    let feedback = feedback_sinks.saturating_mul(cfg.feedback.max_pending_bytes as u64);
    // The journal's and each sink's spool's latest appends, kept for reading.
    // And each sink's latest spans, kept decoded for its delivery task: a
    // span's structs take up to about four times its encoded size, like a
    // batch in delivery.
    let tails = match cfg.spool {
        Some(_) => {
            let sinks = cfg.sinks.len() as u64;
            (1 + sinks) * TAIL_BYTES as u64 + sinks * 4 * HANDOFF_BYTES as u64
        }
        None => 0,
    };
    BASE.saturating_add(cfg.max_inflight_capture_bytes as u64)
        .saturating_add(workers.saturating_mul(parse))
        .saturating_add(journal_writer + span_queue + delivery)
        .saturating_add(connections as u64 * PER_CONNECTION)
        .saturating_add(injected as u64 * cap)
        .saturating_add(sessions)
        .saturating_add(feedback)
        .saturating_add(tails)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, Env, Flags};

    #[test]
    fn the_defaults_come_to_about_700_mib_plus_connections() {
        let cfg = resolve(&Flags::default(), &Env::new(), None).expect("defaults");
        let sessions = 100_000 * PER_SESSION_ENTRY;
        let mib = (worst_case_rss(&cfg, 0, 0) - sessions) >> 20;
        assert_eq!(mib, 32 + 256 + (20 + 240) + 40 + (8 + 60) + 16 + 2 * 4 + 16);
        let more = worst_case_rss(&cfg, 1000, 10) - worst_case_rss(&cfg, 0, 0);
        assert_eq!(more, 1000 * PER_CONNECTION + 10 * (10 << 20));
    }

    #[test]
    fn feedback_counts_once_per_sink_that_takes_it() {
        let env =
            |uri: &str| -> Env { [("MLFLOW_TRACKING_URI".to_string(), uri.to_string())].into() };
        let files = resolve(&Flags::default(), &Env::new(), None).expect("defaults");
        let mlflow =
            resolve(&Flags::default(), &env("http://127.0.0.1:5000"), None).expect("mlflow");
        let more = worst_case_rss(&mlflow, 0, 0) - worst_case_rss(&files, 0, 0);
        assert_eq!(more, mlflow.feedback.max_pending_bytes as u64);
    }
}
