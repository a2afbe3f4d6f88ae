//! Opening a spool directory at start: take its lock, then open each sink's
//! span spool and the exchange journal (each open scans every segment) on
//! the blocking pool, never on an async worker thread; traces left in the
//! other sink layout are moved in first ([`super::migrate`]).

use std::sync::Arc;

use super::{journal, lock, migrate, spool, spooled};
use crate::config::SpoolSettings;
use crate::metrics::Metrics;

/// The stores of a spool directory, opened and locked.
pub(super) struct Stores {
    pub lock: lock::DirLock,
    /// One span spool per sink, in the order of the sinks.
    pub spools: Vec<spool::Spool<spool::RealFs>>,
    pub journal: spool::Spool<spool::RealFs>,
    /// The journal's poison-pill guard (`None` when its marks file cannot be
    /// written: parsing goes on unguarded, logged).
    pub guard: Option<Arc<journal::guard::Guard>>,
}

/// Why the pipeline did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another process uses the spool directory: two must never share one.
    #[error("{0}; two llmtap processes must not share a spool directory: give each its own spool.dir (LLMTAP_SPOOL_DIR)")]
    SpoolInUse(lock::LockError),
    /// The export thread's runtime could not be started (out of threads or
    /// memory).
    #[error("cannot start the export runtime: {0}")]
    ExportRuntime(std::io::Error),
}

/// Locks and opens the spool directory's stores, off the async threads (the
/// open scans every segment). Another process holding the lock is an error;
/// a directory that cannot be opened is logged and gives `None`: traces are
/// then kept in memory only.
pub(super) async fn open_stores(
    settings: &SpoolSettings,
    sinks: &[String],
    metrics: &Arc<Metrics>,
) -> Result<Option<Stores>, StartError> {
    let s = settings.clone();
    let m = metrics.clone();
    let names = sinks.to_vec();
    let opened = tokio::task::spawn_blocking(move || {
        let lock = lock::acquire(&s.dir)?;
        let open = || -> Result<_, spool::SpoolError> {
            let mut spools = names
                .iter()
                .map(|n| spooled::open_at(&s, migrate::sink_dir(&s.dir, n, names.len())))
                .collect::<Result<Vec<_>, _>>()?;
            move_leftovers(&s, &names, &mut spools);
            Ok((spools, journal::open(&s)?))
        };
        Ok::<_, lock::LockError>(open().map(|(spools, journal)| Stores {
            lock,
            spools,
            journal,
            guard: poison_guard(&s, &m),
        }))
    })
    .await;
    let error = match opened {
        Ok(Ok(Ok(stores))) => {
            tracing::info!(
                dir = %settings.dir.display(),
                spooled = stores.spools.iter().map(|s| s.stats().records_pending).sum::<u64>(),
                journaled = stores.journal.stats().records_pending,
                "spool open; traces it holds will be sent"
            );
            return Ok(Some(stores));
        }
        Ok(Err(e @ lock::LockError::InUse { .. })) => return Err(StartError::SpoolInUse(e)),
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(Err(e))) => e.to_string(),
        Err(e) => format!("opening the spool panicked: {e}"),
    };
    tracing::error!(dir = %settings.dir.display(), %error, "spool cannot be opened: traces are kept in memory only, and dropped (counted) if the sink stays down past export.max_attempts");
    Ok(None)
}

/// The journal's poison-pill guard (`None`, logged, when its marks file
/// cannot be written: parsing goes on unguarded).
fn poison_guard(
    settings: &SpoolSettings,
    metrics: &Arc<Metrics>,
) -> Option<Arc<journal::guard::Guard>> {
    let opened = journal::guard::Guard::open(
        &settings.dir.join(journal::DIR),
        settings.dir.join(journal::quarantine::DIR),
        metrics.clone(),
    );
    match opened {
        Ok(g) => Some(Arc::new(g)),
        Err(err) => {
            tracing::error!(dir = %settings.dir.display(), error = %err, "exchange journal: the parse marks cannot be written; a record that crashes llmtap could crash it again on every start");
            None
        }
    }
}

/// Moves traces left in the other sink layout into the sinks' spools
/// (blocking; logged). A failure leaves them where they are, for next time.
fn move_leftovers(s: &SpoolSettings, names: &[String], spools: &mut [spool::Spool<spool::RealFs>]) {
    for dir in migrate::leftovers(&s.dir, names) {
        let moved = spooled::open_at(s, dir.clone()).and_then(|mut from| {
            let mut to: Vec<_> = spools.iter_mut().collect();
            migrate::copy_all(&mut from, &mut to)
        });
        match moved {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(from = %dir.display(), traces = n, sinks = names.len(), "moved spooled traces into the spools of the configured sinks")
            }
            Err(e) => {
                tracing::error!(from = %dir.display(), error = %e, "could not move spooled traces into the configured sinks' spools; they stay there until the next start")
            }
        }
    }
}
